# The quickstart: a telecom (SIP / IMS / VoLTE / 5G) assistant built end to end on a laptop CPU.
#
#   dsl validate recipes/quickstart.dsl   # syntax, types, references and files, with located errors
#   dsl plan recipes/quickstart.dsl       # what apply would run, and why
#   dsl apply recipes/quickstart.dsl      # run it (a few minutes on a CPU, no download)
#
# The recipe pretrains a tiny model from scratch on the bundled notes, fine-tunes it with LoRA on bundled
# question/answer pairs, builds two hybrid (BM25 + dense) RAG systems, compares all four systems on an expert
# eval set with confidence intervals and a gate, trains a router that tells telecom questions from everyday
# ones, and prepares the OpenAI-compatible gateway for `dsl serve`.
#
# Paths are relative to this file's folder. Every block is `kind label { ... }`; other blocks refer to it as
# `kind.label` (e.g. pretrain.base), and apply runs the steps in dependency order, skipping those whose
# configuration and inputs have not changed since the last run.
domain quickstart {
  description = "SIP, IMS, VoLTE and 5G core assistant, trained from scratch on a CPU"

  # A 2-layer Llama built from scratch, so nothing is downloaded; its 1024-token context leaves room for
  # retrieved chunks in the prompt. With a real model, write instead
  # id = "meta-llama/Meta-Llama-3-8B-Instruct" (see recipes/telecom.dsl).
  base_model tiny {
    architecture = llama { layers = 2, hidden = 128, heads = 4, vocab = 2000, context = 1024 }
  }

  # Twelve short Markdown notes (about 34 KB) on SIP, SDP/RTP, codecs, NAT traversal, IMS, Diameter, VoLTE,
  # LTE/EPC, the 5G core, 3GPP and WebRTC, cut into overlapping 120-word chunks; near-duplicate chunks are
  # dropped.
  corpus telecom {
    paths = ["quickstart/corpus/*.md"]
    split = { by = word, length = 120, overlap = 20 }
    dedupe = near
  }

  # 99 question/answer pairs in OpenAI chat format ({"messages": [...]}); 10% held out for the eval loss.
  # Each pair is kept as written and added once more with the chunks rag.docs retrieves for its question in
  # the prompt, exactly as a rag system will prompt the model: retrieval-augmented fine-tuning, so that the
  # fine-tuned model learns to answer from retrieved notes (rag.tuned below).
  dataset qa {
    path = "quickstart/sft.jsonl"
    format = chat
    validation_split = 0.1
    retrieval = rag.docs
  }

  # Pre-training from scratch, since the base model is an architecture: a BPE tokenizer is trained on the
  # corpus first, then the model learns to predict the next token of 128-token blocks of the notes (about a
  # minute on two CPU cores; a model this small learns the notes' vocabulary, not their facts).
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

  # LoRA adapters on every linear layer; the loss is on the assistant's tokens only. Rows with chunks are long,
  # hence max_length = 1024.
  finetune sip {
    from = pretrain.base
    data = dataset.qa
    method = lora
    lora = { rank = 8, alpha = 16 }
    max_steps = 200
    batch_size = 4
    learning_rate = 0.001
    max_length = 1024
    save_steps = 50
  }

  # Retrieval over the same notes (the 3 best chunks of BM25 and dense retrieval fused), answered by the
  # pretrained model ...
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

  # 55 expert questions written apart from the training data (phrased differently: apply checks 13-gram
  # overlap), each with a short answer that appears in the notes and the note that supports it. The four
  # systems answer the same questions; the report gives each metric with a bootstrap confidence interval and
  # the difference against the first system. A model this small writes almost no right answer (exact match and
  # F1 near 0), so the report also gives the perplexity of each expert answer after the system's own prompt:
  # fine-tuning makes the right answers about five times likelier; retrieved notes help the fine-tuned model,
  # trained with them, and hurt the pretrained one, which never saw context in its prompt.
  eval expert {
    data = "quickstart/eval.jsonl"
    metrics = [exact_match, f1, perplexity, citation_recall, recall_at_k]
    systems = [pretrain.base, finetune.sip, rag.docs, rag.tuned]
    max_new_tokens = 16
    # Promote only if the fine-tuned RAG system cites the note that supports the answer for most questions,
    # judged by the lower end of its confidence interval, not by luck. A failed gate stops route and serve.
    # With a real model, also gate on answers, e.g. rag.tuned.f1 >= pretrain.base.f1 + 0.05.
    gate = rag.tuned.citation_recall.ci_low >= 0.6
  }

  # A TF-IDF + logistic-regression router: telecom questions go to the fine-tuned RAG system, everything
  # else to the general model (here the pretrained one; in production an endpoint { ... } of a large general
  # model, see recipes/telecom.dsl).
  route {
    classifier = tfidf
    examples = "quickstart/route.jsonl"
    domain = rag.tuned
    general = pretrain.base
  }

  # `dsl serve recipes/quickstart.dsl` starts an OpenAI-compatible gateway on http://127.0.0.1:8000/v1;
  # ask for model "auto" to be routed.
  serve {
    engine = local
    port = 8000
  }
}
