domain t {
  corpus c { paths = ["notes.txt"] }
  corpus c { paths = ["notes.txt"] }
}
