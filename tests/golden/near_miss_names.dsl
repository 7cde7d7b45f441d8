domain t {
  base_model b { id = "org/m"  dtype = bf16 }
  corpus c { paths = ["notes.txt"] }
  rag r { corpus = corpus.c  store = redis {} }
  eval e { data = "notes.txt"  systems = [rag.r]  metrics = [f1_score] }
}
