domain t {
  corpus c { paths = ["notes.txt"] }
  rag r { corpus = corpus.c }
  route main { domain = rag.r  examples = "notes.txt" }
}
