domain t {
  corpus c {
    path = ["notes.txt"]
  }
}
