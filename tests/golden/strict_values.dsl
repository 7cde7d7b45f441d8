domain t {
  base_model b { architecture = llama { layers = 2, hidden = 64, heads = 4 } }
  dataset d { path = "notes.txt"  format = text }
  finetune f {
    from = base_model.b
    data = dataset.d
    max_steps = "20"
    epochs = true
    merge = 1
    packing = yes
    assistant_only_loss = True
    learning_rate = None
  }
}
