# The quickstart: a telecom (SIP / IMS / VoLTE) assistant built end to end on a laptop CPU.
#
#   dsl apply recipes/quickstart.dsl
#
# pretrains a tiny model from scratch on the bundled corpus, fine-tunes it with LoRA on bundled Q&A pairs,
# builds a hybrid (BM25 + dense) RAG index, evaluates base, fine-tuned, RAG and fine-tuned + RAG side by side
# with confidence intervals and a gate, trains the router, and prepares the gateway for `dsl serve`.
domain quickstart {
  description = "SIP, IMS and VoLTE assistant, trained from scratch on a CPU"

  # A 2-layer Llama: trained from scratch, so no download is needed.
  base_model tiny {
    architecture = llama { layers = 2, hidden = 128, heads = 4, vocab = 2000, context = 256 }
  }

  # Ten short Markdown notes on SIP, SDP/RTP, IMS, VoLTE, Diameter, NAT traversal, 5G core, codecs, WebRTC.
  corpus telecom {
    paths = ["quickstart/corpus/*.md"]
    split = { by = word, length = 120, overlap = 20 }
    dedupe = near
  }

  # Question/answer pairs in OpenAI chat format.
  dataset qa {
    path = "quickstart/sft.jsonl"
    format = chat
    validation_split = 0.1
  }

  # Pre-training from scratch, since the base model is an architecture: a BPE tokenizer is trained first.
  pretrain base {
    from = base_model.tiny
    corpus = corpus.telecom
    max_steps = 1200
    batch_size = 8
    block_size = 128
    learning_rate = 0.001
    warmup_ratio = 0.05
    save_steps = 200
  }

  # LoRA adapters on every linear layer; the loss is on the assistant's tokens only.
  finetune sip {
    from = pretrain.base
    data = dataset.qa
    method = lora
    lora = { rank = 8, alpha = 16, dropout = 0.05 }
    max_steps = 200
    batch_size = 4
    learning_rate = 0.001
    max_length = 256
    save_steps = 50
  }

  # Retrieval over the same notes, answered by the pretrained model ...
  rag docs {
    corpus = corpus.telecom
    retriever = hybrid
    top_k = 3
    generator = pretrain.base
    max_new_tokens = 32
  }

  # ... and by the fine-tuned one: fine-tuning plus RAG.
  rag tuned {
    corpus = corpus.telecom
    retriever = hybrid
    top_k = 3
    generator = finetune.sip
    max_new_tokens = 32
  }

  # Expert questions written apart from the training data, each with the note that supports its answer.
  eval expert {
    data = "quickstart/eval.jsonl"
    metrics = [exact_match, f1, citation_recall, recall_at_k]
    systems = [pretrain.base, finetune.sip, rag.docs, rag.tuned]
    max_new_tokens = 16
    # Promote only if the fine-tuned RAG system finds the supporting note for most questions.
    gate = rag.tuned.citation_recall >= 0.6
  }

  # Telecom questions go to the fine-tuned RAG system; everything else to the general model (here the
  # pretrained one; in production an endpoint { ... } of a large general model).
  route {
    classifier = tfidf
    examples = "quickstart/route.jsonl"
    domain = rag.tuned
    general = pretrain.base
  }

  serve {
    engine = local
    port = 8000
  }
}
