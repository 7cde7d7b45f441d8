domain t {
  corpus null { paths = ["notes.txt"] }
  corpus not { paths = ["notes.txt"] }
}
