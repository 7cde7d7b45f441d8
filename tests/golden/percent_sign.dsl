domain t {
  corpus c { paths = ["notes.txt"] }
  eval e { data = "notes.txt"  systems = [rag.r]  gate = rag.r.exact_match >= 30% }
}
