domain t {
  corpus archive { paths = ["notes.txt"] }
  rag docs { corpus = corpus.аrchive }
}
