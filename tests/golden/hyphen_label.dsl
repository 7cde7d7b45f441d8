domain t {
  corpus cell-sites { paths = ["notes.txt"] }
}
