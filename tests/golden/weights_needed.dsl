domain t {
  base_model b { architecture = llama { layers = 2, hidden = 64, heads = 4 } }
  corpus c { paths = ["notes.txt"] }
  dataset d { path = "notes.txt"  format = text }
  finetune f { from = base_model.b  data = dataset.d }
  rag r { corpus = corpus.c  retriever = bm25  generator = base_model.b }
}
