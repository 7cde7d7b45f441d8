# A fixed-income and financial-statements analyst on Qwen2 7B Instruct: QLoRA with DeepSpeed ZeRO-3 and CPU
# offload on 8 GPUs, dense retrieval, a multiple-choice eval with its own prompt template, and SGLang serving
# with tensor parallelism. Queries outside finance go to the untuned base model.
#
#   dsl apply recipes/finance.dsl
#
# The sample data in finance/ is a handful of rows to show the formats: replace it with your own.
domain finance {
  description = "Bonds, interest rates and financial statement analysis"

  base_model qwen2 {
    id = "Qwen/Qwen2-7B-Instruct"
    dtype = bfloat16
  }

  corpus filings {
    paths = ["finance/corpus/**/*.md"]
    split = { by = word, length = 200, overlap = 30 }
    dedupe = exact
    min_chars = 50
  }

  dataset qa {
    path = "finance/sft.jsonl"
    format = chat
    validation_split = 0.15
  }

  finetune analyst {
    from = base_model.qwen2
    data = dataset.qa
    method = qlora
    lora = { rank = 64, alpha = 16, dropout = 0.05 }
    epochs = 2
    learning_rate = 0.0001
    batch_size = 8
    gradient_accumulation = 2
    weight_decay = 0.01
    warmup_ratio = 0.05
    max_length = 2048
    packing = true
    seed = 7
  }

  rag filings {
    corpus = corpus.filings
    retriever = dense
    top_k = 4
    generator = finetune.analyst
  }

  # Multiple choice: each choice is scored by the model's log-likelihood after the template's prompt.
  eval cfa {
    data = "finance/eval.jsonl"
    task = multiple_choice
    metrics = [accuracy]
    systems = [base_model.qwen2, finetune.analyst, rag.filings]
    prompt = file("finance/prompts/mc.j2")
    bootstrap = 2000
    confidence = 0.9
    gate = finetune.analyst.accuracy >= base_model.qwen2.accuracy
  }

  route {
    classifier = tfidf
    examples = "finance/route.jsonl"
    domain = rag.filings
    general = base_model.qwen2
  }

  serve {
    engine = sglang
    port = 8000
    engine_port = 30000
    sglang = { tp = 2, mem_fraction = 0.8, extra_args = ["--enable-torch-compile"] }
  }

  compute {
    launcher = accelerate
    num_processes = 8
    mixed_precision = bf16
    deepspeed = { stage = 3, offload = true }
  }
}
