# A telecom operations assistant on Llama 3 8B Instruct: continued pre-training on the operator's notes,
# LoRA fine-tuning on troubleshooting Q&A (and on RAFT rows a teacher derives from the notes), DPO on an engineer's preferences over that, hybrid RAG, two evals
# (operations questions: base, SFT and DPO side by side; and an expert SIP/IMS set), a router with a general
# endpoint for everything else, and SGLang serving. Training runs on 8 GPUs with FSDP.
# recipes/telecom-gpu.dsl extends this recipe for two 8-GPU machines.
#
#   export GENERAL_API_KEY=...
#   dsl apply recipes/telecom.dsl
#
# The corpus is the SIP/IMS/VoLTE notes and operations notes in telecom/corpus.
domain telecom {
  description = "SIP, IMS and VoLTE operations assistant"

  base_model llama3 {
    id = "meta-llama/Meta-Llama-3-8B-Instruct"
    dtype = bfloat16
  }

  corpus notes {
    paths = ["telecom/corpus/*.md"]
    split = { by = word, length = 300, overlap = 30 }
    dedupe = near
    near_threshold = 0.9
  }

  dataset ops {
    path = "telecom/sft.jsonl"
    format = chat
    system_prompt = "You are a telecom network engineer. Answer precisely and name the interface or message involved."
    validation_split = 0.1
  }

  # Continued pre-training: the hub model keeps its tokenizer and reads the notes in 1024-token blocks.
  pretrain notes {
    from = base_model.llama3
    corpus = corpus.notes
    epochs = 1
    learning_rate = 2e-05
    batch_size = 4
    gradient_accumulation = 4
    block_size = 1024
    warmup_ratio = 0.03
    save_steps = 200
  }

  finetune ops {
    from = pretrain.notes
    data = dataset.ops
    method = lora
    lora = { rank = 16, alpha = 32 }
    epochs = 3
    learning_rate = 0.0002
    batch_size = 4
    max_length = 2048
  }

  # Preference tuning: an engineer's "this answer, not that one" (telecom/prefs.jsonl) on top of the SFT adapter,
  # with the adapter-less model as the reference (TRL's DPO).
  align ops_dpo {
    from = finetune.ops
    pairs = "telecom/prefs.jsonl"
    method = dpo
    beta = 0.1
    epochs = 2
  }

  # Reward tuning (GRPO): the model answers its own multiple-choice set (telecom/mc.jsonl, TeleQnA's format) and
  # is rewarded by option accuracy, the metric the eval measures; a short answer format earns a little more.
  reward ops_grpo {
    from = finetune.ops
    prompts = "telecom/mc.jsonl"
    rewards = { accuracy = 1.0, format = { pattern = "^[1-4]$", weight = 0.2 } }
    num_generations = 4
    max_steps = 200
  }

  # Data made from the corpus (docs/data.md): a teacher writes RAFT rows, each a question grounded in one note,
  # that note among the hard negatives the notes' own retrieval returns for the question, and an answer that
  # quotes and cites it; filtered against both eval sets, reviewed in `dsl ui`, then fine-tuned on. It also writes
  # candidate eval items, which count only once an expert has accepted them (never training data).
  rag search {
    corpus = corpus.notes
    retriever = hybrid
    top_k = 5
  }

  synth ops_raft {
    task = raft
    corpus = corpus.notes
    teacher = endpoint {
      url = "https://api.openai.com/v1"
      model = "gpt-4o"
      api_key = env("GENERAL_API_KEY")
    }
    rows = 400
    budget_tokens = 2000000
    rag = rag.search
    distractors = 3
    no_golden_share = 0.2
    review = optional
  }

  synth ops_eval {
    task = eval
    corpus = corpus.notes
    teacher = endpoint {
      url = "https://api.openai.com/v1"
      model = "gpt-4o"
      api_key = env("GENERAL_API_KEY")
    }
    rows = 60
    review = required
  }

  finetune ops_raft {
    from = pretrain.notes
    data = synth.ops_raft
    method = lora
    lora = { rank = 16, alpha = 32 }
    epochs = 2
    learning_rate = 0.0002
    batch_size = 4
    max_length = 2048
  }

  rag ops {
    corpus = corpus.notes
    retriever = hybrid
    top_k = 5
    generator = finetune.ops
    max_new_tokens = 256
  }

  eval ops {
    data = "telecom/eval.jsonl"
    metrics = [exact_match, f1, citation_recall, recall_at_k, mrr]
    systems = [base_model.llama3, finetune.ops, finetune.ops_raft, align.ops_dpo, reward.ops_grpo, rag.ops]
    gate = rag.ops.f1 >= base_model.llama3.f1 + 0.05
  }

  eval expert {
    data = "telecom/expert.jsonl"
    metrics = [exact_match, f1, citation_recall]
    systems = [base_model.llama3, pretrain.notes, rag.ops]
    limit = 40
    fail_on_contamination = true
  }

  route {
    classifier = embedding
    examples = "telecom/route.jsonl"
    eval_sets = [eval.ops, eval.expert]
    domain = rag.ops
    general = endpoint {
      url = "https://api.openai.com/v1"
      model = "gpt-4o-mini"
      api_key = env("GENERAL_API_KEY")
    }
    threshold = 0.5
  }

  serve {
    engine = sglang
    host = "0.0.0.0"
    port = 8000
    sglang = { tp = 1, dp = 4, max_loras_per_batch = 8 }
  }

  compute {
    launcher = accelerate
    num_processes = 8
    mixed_precision = bf16
    fsdp = { sharding = full_shard }
  }
}
