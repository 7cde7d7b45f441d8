domain t {
  corpus c { paths = ['notes.txt'] }
}
