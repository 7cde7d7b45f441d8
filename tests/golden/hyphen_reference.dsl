domain t {
  corpus cell_sites { paths = ["notes.txt"] }
  rag docs { corpus = corpus.cell-sites }
}
