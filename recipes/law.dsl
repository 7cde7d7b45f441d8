# A legal research assistant on Mistral 7B Instruct: LoRA fine-tuning sharded with FSDP on 8 GPUs, RAG with
# its own citation prompt, a question-answering eval and a hearsay classification eval (yes/no), and a router
# that sends everything that is not legal research to a general endpoint.
#
#   export GENERAL_API_KEY=...
#   dsl apply recipes/law.dsl
#
# The sample data in law/ is a handful of rows to show the formats: replace it with your own.
domain law {
  description = "US evidence and contract law research assistant"

  base_model mistral {
    id = "mistralai/Mistral-7B-Instruct-v0.3"
    dtype = bfloat16
  }

  corpus casebook {
    paths = ["law/corpus/*.md"]
    split = { by = passage, length = 4, overlap = 1 }
  }

  dataset qa {
    path = "law/sft.jsonl"
    format = chat
    validation_split = 0.1
  }

  finetune counsel {
    from = base_model.mistral
    data = dataset.qa
    method = lora
    lora = {
      rank = 32
      alpha = 64
      dropout = 0.1
      target_modules = ["q_proj", "k_proj", "v_proj", "o_proj"]
    }
    epochs = 2
    learning_rate = 0.0001
    batch_size = 2
    gradient_accumulation = 8
    scheduler = cosine
    max_length = 4096
    merge = true
  }

  # The prompt (a Jinja template with `documents` and `question`) asks for [n] citations and a disclaimer.
  rag research {
    corpus = corpus.casebook
    retriever = hybrid
    top_k = 6
    generator = finetune.counsel
    prompt = file("law/prompts/rag.j2")
    max_new_tokens = 384
  }

  eval research {
    data = "law/eval.jsonl"
    metrics = [exact_match, f1, citation_precision, citation_recall]
    systems = [base_model.mistral, finetune.counsel, rag.research]
    gate = rag.research.f1.ci_low > base_model.mistral.f1
  }

  # Yes/no classification: is the evidence described hearsay? Scored by the log-likelihood of each label.
  eval hearsay {
    data = "law/hearsay.jsonl"
    task = classification
    metrics = [accuracy, macro_f1]
    systems = [base_model.mistral, finetune.counsel]
    gate = finetune.counsel.accuracy >= 0.7
  }

  route {
    classifier = tfidf
    examples = "law/route.jsonl"
    eval_sets = [eval.research]
    domain = rag.research
    general = endpoint {
      url = "https://api.mistral.ai/v1"
      model = "mistral-large-latest"
      api_key = env("GENERAL_API_KEY")
      timeout = 60
    }
    threshold = 0.6
  }

  serve {
    engine = local
    port = 8080
    max_batch_size = 4
    max_tokens = 512
  }

  compute {
    launcher = accelerate
    num_processes = 8
    mixed_precision = bf16
    fsdp = { sharding = full_shard, auto_wrap = transformer }
  }
}
