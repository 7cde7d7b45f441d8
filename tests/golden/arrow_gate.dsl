domain t {
  eval e { data = "notes.txt"  systems = [rag.r]  gate = rag.r.f1 => 0.5 }
}
