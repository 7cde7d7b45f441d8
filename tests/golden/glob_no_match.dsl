domain t {
  corpus c { paths = ["missing/*.md"] }
  dataset d { path = "nope.jsonl" }
}
