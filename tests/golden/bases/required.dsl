domain base {
  corpus c { paths = ["../notes.txt"] }
  rag r { corpus = corpus.c }
}
