domain t {
  corpus c { paths = ["notes.txt"], dedupe = none }
}
