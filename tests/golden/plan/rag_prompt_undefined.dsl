domain t {
  corpus c { paths = ["notes.txt"] }
  rag r {
    corpus = corpus.c
    retriever = bm25
    prompt = """{% for doc in documents %}{{ doc.content }}{% endfor %}
Question: {{ question }} (asked by {{ asker }})"""
  }
}
