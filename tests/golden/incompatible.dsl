domain t {
  base_model b { id = "org/m"  path = "x" }
  dataset d { path = "notes.txt"  format = text }
  finetune f { from = base_model.b  data = dataset.d  method = full  lora = { rank = 8 } }
}
