domain t {
  corpus c { paths = ["notes.txt"] }
  rag r { corpus = corpus.c  retriever = bm25 }
  route { examples = "route.jsonl"  domain = rag.r }
}
