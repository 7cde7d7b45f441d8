domain t {
  corpsu c { paths = ["notes.txt"] }
}
