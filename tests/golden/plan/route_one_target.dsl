domain t {
  corpus c { paths = ["notes.txt"] }
  rag r { corpus = corpus.c  retriever = bm25 }
  route { examples = "route_domain_only.jsonl"  domain = rag.r }
}
