domain t {
  rag r {
    top_k: 3
  }
}
