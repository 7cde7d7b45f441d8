domain t {
  base_model arch { architecture = llama { layers = 2, hidden = 64, heads = 4 } }
  corpus c { paths = ["notes.txt"] }
  pretrain p { from = base_model.arch  corpus = corpus.c }
  rag r { corpus = corpus.c  generator = pretrain.p }
  eval e {
    data = "notes.txt"
    systems = [rag.r, pretrain.p, base_model.arch, pretrain.p]
    metrics = [exact_match, recall_at_k]
    gate = rag.r.exact_match >= 60 and pretrain.p.recall_at_k > 0.5
  }
}
