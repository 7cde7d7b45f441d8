"""Small recipes written into temporary folders, for the core tests."""

from __future__ import annotations

import json
from pathlib import Path

SMALL = '''# a small domain
domain demo {
  description = "demo domain"

  base_model tiny {
    architecture = llama { layers = 2, hidden = 64, heads = 4, vocab = 500, context = 128 }
  }

  corpus docs {
    paths = ["corpus/*.txt"]
    split = { by = word, length = 50, overlap = 5 }
  }

  dataset qa {
    path = "sft.jsonl"
    format = chat
  }

  pretrain base {
    from = base_model.tiny
    corpus = corpus.docs
    max_steps = 3
  }

  finetune sip {
    from = pretrain.base
    data = dataset.qa
    method = lora
    lora = { rank = 4, alpha = 8 }
    max_steps = 2
  }

  rag docs {
    corpus = corpus.docs
    generator = finetune.sip
  }

  eval expert {
    data = "eval.jsonl"
    metrics = [exact_match, f1]
    systems = [pretrain.base, finetune.sip, rag.docs]
    gate = rag.docs.f1 >= 0
  }

  route {
    examples = "route.jsonl"
    domain = rag.docs
  }

  serve {
    port = 8123
  }
}
'''


def write_small(folder: Path, recipe: str = SMALL) -> Path:
    (folder / "corpus").mkdir(parents=True, exist_ok=True)
    (folder / "corpus" / "a.txt").write_text("SIP is the session initiation protocol used for VoIP calls.\n")
    (folder / "corpus" / "b.txt").write_text("IMS is the IP multimedia subsystem defined by 3GPP.\n")
    rows = [{"messages": [{"role": "user", "content": "What is SIP?"},
                          {"role": "assistant", "content": "The session initiation protocol."}]}]
    (folder / "sft.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "eval.jsonl").write_text(json.dumps({"id": "1", "question": "What is IMS?", "answer": "IP multimedia subsystem"}) + "\n")
    routes = [("What is SIP?", "domain"), ("What is IMS?", "domain"), ("Weather today?", "general"),
              ("A good pasta recipe?", "general")]  # two targets, some to hold out: a router can train on them
    (folder / "route.jsonl").write_text("".join(json.dumps({"text": t, "target": g}) + "\n" for t, g in routes))
    path = folder / "recipe.dsl"
    path.write_text(recipe)
    return path
