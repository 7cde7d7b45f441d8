domain t {
  corpus c {
    paths = ["notes.txt"]
    clean = yes
  }
  rag docs {
    corpus = corpus.c
    embedding_backend = onnx_int8
  }
}
