domain t {
  base_model b { architecture = llama { layers = 2, hidden = 64, heads = 4 } }
  corpus c { paths = ["notes.txt"] }
  pretrain p {
    from = base_model.b
    corpus = corpus.c
    weight_decay = 1e400
    seed = 4294967296
    max_steps = 100000000000000000000000000000
  }
}
