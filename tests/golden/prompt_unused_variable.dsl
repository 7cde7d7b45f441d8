domain t {
  corpus c { paths = ["plan/notes.txt"] }
  rag r {
    corpus = corpus.c
    retriever = bm25
    prompt = """{% for doc in documents %}{{ doc.content }}{% endfor %}
Question: {{ qestion }}"""
  }
}
