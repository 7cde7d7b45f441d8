"""The built-in block kinds, one module each: the block class and its declaration side by side."""

import importlib

ORDER = ("base_model", "corpus", "dataset", "synth", "pretrain", "finetune", "align", "reward", "rag", "eval", "route", "serve", "compute")

for _name in ORDER:  # importing a module declares its kind; this order is the order of docs, plans and dumps
    importlib.import_module(f"sdk.spec.blocks.{_name}")
