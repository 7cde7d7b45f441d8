domain t {
  base_model b { id = "org/tiny" }
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
