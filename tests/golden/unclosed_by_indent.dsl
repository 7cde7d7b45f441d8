domain t {
  corpus c {
    paths = ["notes.txt"]
  dataset d { path = "notes.txt"  format = text }
}
