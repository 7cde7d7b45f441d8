domain t {
  dataset d { path = "notes.txt"  format = text  keep_bare = false }
  eval e { data = "notes.txt"  systems = [endpoint { url = "http://localhost:1/v1", model = "m" }]  rubric = "grade" }
}
