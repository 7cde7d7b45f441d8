domain t {
  base_model b { architecture = llama { layers = 2, hidden = 64, heads = 4 } }
  corpus c { paths = ["notes.txt"] }
  pretrain p { from = base_model.b  corpus = corpus.c }
  dataset qa { path = "sft_array.jsonl" }
  finetune f { from = pretrain.p  data = dataset.qa }
}
