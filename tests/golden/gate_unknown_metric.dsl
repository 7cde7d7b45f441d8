domain t {
  base_model tiny { architecture = llama {} }
  corpus docs { paths = ["notes.txt"] }
  pretrain p { from = base_model.tiny  corpus = corpus.docs }
  eval e {
    data = "notes.txt"
    systems = [pretrain.p]
    metrics = [exact_match]
    gate = pretrain.p.f1 >= 0.5 and pretrain.q.exact_match > 0
  }
}
