domain t {
  // the handbook
  corpus c { paths = ["notes.txt"] }
}
