domain t {
  base_model b { id = "org/m" }
  dataset d { path = "notes.txt"  format = text }
  finetune a { from = finetune.b  data = dataset.d }
  finetune b { from = finetune.a  data = dataset.d }
}
