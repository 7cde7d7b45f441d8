domain t {
  corpus c { paths = ["notes.txt"] }
  rag r {
    corpus = corpus.c
    generator = endpoint { url = "http://127.0.0.1:9/v1", modle = "m", api_key = "sk-live-0123456789" }
  }
}
