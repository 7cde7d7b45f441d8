domain t {
  base_model b { id = "org/tiny" }
  corpus c {
    paths = ["notes.txt"]
    near_threshold = 0.5
  }
  dataset d { path = "notes.txt"  format = text }
  finetune f { from = base_model.b  data = dataset.d  method = full  merge = true }
  rag r { corpus = corpus.c  retriever = bm25  embedding_backend = onnx-int8 }
  eval e {
    data = "notes.txt"
    systems = [finetune.f]
    fields = { answer_pattern = "option" }
    gate = finetune.f.f1 >= 1e400
  }
}
