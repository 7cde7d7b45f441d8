domain t {
  base_model tiny { architecture = llama {} }
  corpus docs { paths = ["notes.txt"] }
  pretrain p { from = base_model.tiyn  corpus = corpus.docs }
}
