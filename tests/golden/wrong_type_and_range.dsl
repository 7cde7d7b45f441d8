domain t {
  base_model tiny { architecture = llama { layers = "two", hidden = 64 } }
  corpus docs { paths = ["notes.txt"]  split = { length = 10, overlap = 20 } }
  rag r { corpus = corpus.docs  top_k = 0 }
}
