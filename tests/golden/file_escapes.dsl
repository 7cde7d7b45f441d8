domain t {
  corpus c { paths = ["notes.txt"] }
  rag r { corpus = corpus.c  prompt = file("../../secrets.txt") }
}
