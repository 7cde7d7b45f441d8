# A Python packaging and Git helper on Phi-3 mini: full fine-tuning (every weight trains) with DeepSpeed
# ZeRO-3 on 8 GPUs, BM25 retrieval over the team's notes, and a router whose general queries go to an
# OpenAI-compatible endpoint. Served by the local engine.
#
#   export GENERAL_API_KEY=... GATEWAY_API_KEY=...
#   dsl apply recipes/code.dsl
#
# The sample data in code/ is a handful of rows to show the formats: replace it with your own.
domain code {
  description = "Python packaging and Git helper"

  base_model phi3 {
    id = "microsoft/Phi-3-mini-4k-instruct"
    revision = "main"
    dtype = bfloat16
  }

  corpus docs {
    paths = ["code/corpus/*.md"]
    format = markdown
    split = { by = passage, length = 3, overlap = 1 }
  }

  dataset howto {
    path = "code/sft.jsonl"
    format = chat
  }

  finetune helper {
    from = base_model.phi3
    data = dataset.howto
    method = full
    epochs = 3
    learning_rate = 1e-05
    batch_size = 2
    gradient_accumulation = 8
    scheduler = linear
    max_length = 4096
    logging_steps = 10
  }

  rag docs {
    corpus = corpus.docs
    retriever = bm25
    top_k = 3
    generator = finetune.helper
  }

  eval howto {
    data = "code/eval.jsonl"
    metrics = [exact_match, f1, recall_at_k, mrr]
    systems = [base_model.phi3, finetune.helper, rag.docs]
    gate = rag.docs.recall_at_k >= 0.75 and rag.docs.f1 >= base_model.phi3.f1
  }

  route {
    classifier = tfidf
    examples = "code/route.jsonl"
    domain = rag.docs
    general = endpoint {
      url = "https://api.together.xyz/v1"
      model = "meta-llama/Llama-3-70b-chat-hf"
      api_key = env("GENERAL_API_KEY")
      max_retries = 5
    }
  }

  serve {
    engine = local
    port = 8000
    api_key = env("GATEWAY_API_KEY")
    max_batch_size = 16
  }

  compute {
    launcher = accelerate
    num_processes = 8
    mixed_precision = bf16
    deepspeed = { stage = 3 }
  }
}
