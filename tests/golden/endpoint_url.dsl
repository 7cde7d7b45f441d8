domain t {
  corpus c { paths = ["plan/notes.txt"] }
  rag r {
    corpus = corpus.c
    retriever = bm25
    generator = endpoint { url = "localhost:8000/v1", model = "general" }
  }
  serve { host = "http://0.0.0.0" }
}
