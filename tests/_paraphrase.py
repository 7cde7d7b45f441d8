"""A small deterministic paraphraser, and the contamination filter's recall measured on real TeleQnA.

``paraphrase(text)`` rewrites a sentence the way a teacher model rewording an eval item would: it moves the
phrase after the first ``of``/``in``/``for``/... to the front (``What is the purpose of X?`` -> ``X: what is the
aim?``) and swaps common words for synonyms from a fixed table (``purpose`` -> ``aim``, ``used`` ->
``employed``). The filter knows nothing of this table.

``measure_contamination(data_dir)`` is the measurement that tests/test_synthfilter.py runs small and
tests/benchmarks/bench_synth.py (issue 26, item 7) runs in full: call it from the bench as
``from tests._paraphrase import measure_contamination`` and print its ``verbatim``/``paraphrased`` recalls and
``false_positive`` rate."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

SYNONYMS = {
    "purpose": "aim", "main": "primary", "primary": "main", "used": "employed", "use": "employ",
    "uses": "employs", "using": "employing", "provide": "supply", "provides": "supplies", "allows": "permits",
    "allow": "permit", "enable": "allow", "enables": "allows", "improve": "enhance", "improves": "enhances",
    "reduce": "decrease", "reduces": "decreases", "increase": "raise", "increases": "raises",
    "method": "approach", "technique": "method", "techniques": "methods", "advantage": "benefit",
    "advantages": "benefits", "key": "crucial", "type": "kind", "types": "kinds", "different": "distinct",
    "required": "needed", "requirements": "needs", "based": "founded", "role": "function", "goal": "objective",
    "difference": "distinction", "definition": "meaning", "information": "details", "describe": "explain",
    "describes": "explains", "typical": "usual", "typically": "usually", "important": "significant",
    "problem": "issue", "challenges": "difficulties", "achieve": "attain", "large": "big", "small": "little",
    "high": "elevated", "low": "reduced", "new": "novel", "potential": "possible", "specific": "particular",
    "responsible": "accountable", "process": "procedure", "procedure": "process", "approach": "strategy",
    "performance": "effectiveness", "efficiency": "efficacy", "benefit": "gain", "feature": "characteristic",
    "features": "characteristics", "determine": "establish", "ensure": "guarantee", "support": "back",
    "supports": "backs", "indicate": "signal", "indicates": "signals", "consider": "regard", "compared": "contrasted",
    "obtain": "get", "maximum": "highest", "minimum": "lowest", "received": "obtained", "send": "transmit",
    "sent": "transmitted", "shows": "demonstrates", "mentioned": "cited", "proposed": "suggested",
    "common": "frequent", "several": "various", "major": "principal", "term": "expression", "stand": "represent",
    "multiple": "several", "user": "subscriber", "users": "subscribers", "device": "terminal",
    "devices": "terminals", "model": "framework", "number": "count", "rate": "speed", "time": "duration",
    "mode": "setting", "transfer": "transport", "function": "role", "value": "quantity", "area": "region",
    "areas": "regions", "range": "span", "level": "degree", "technology": "technique",
    "system": "setup", "systems": "setups", "control": "management", "ability": "capacity",
}
_PIVOTS = (" of ", " in ", " for ", " between ", " during ", " when ", " to ")
_WORD = re.compile(r"[A-Za-z]+")


def _swap(match: re.Match[str]) -> str:
    word = match.group(0)
    new = SYNONYMS.get(word.lower())
    if new is None:
        return word
    return new.capitalize() if word[0].isupper() else new


def paraphrase(text: str) -> str:
    """Reorder around the first pivot word after the third word, then swap synonyms; deterministic."""
    body = text.strip()
    end = body[-1] if body and body[-1] in "?.!" else ""
    body = body[:-1] if end else body
    for pivot in _PIVOTS:
        at = body.find(pivot, len(" ".join(body.split()[:3])))
        if at > 0:
            head, tail = body[:at], body[at + len(pivot):]
            body = f"{tail}: {head[:1].lower()}{head[1:]}{pivot.rstrip()}"
            break
    return _WORD.sub(_swap, body) + end


def teleqna(data_dir: Path) -> list[tuple[str, str, str]]:
    """TeleQnA's items as (id, question, answer text, explanation), in file order; the zip is AES-encrypted (pyzipper)."""
    import pyzipper

    with pyzipper.AESZipFile(data_dir / "teleqna" / "TeleQnA.zip") as zf:
        zf.setpassword(b"teleqnadataset")
        data: dict[str, Any] = json.loads(zf.read(zf.namelist()[0]))
    return [(key.split()[-1], v["question"], v["answer"].split(":", 1)[-1].strip(), v.get("explanation") or "")
            for key, v in data.items()]


def measure_contamination(data_dir: Path, n_eval: int = 1000, n_unrelated: int = 8000, seed: int = 0,
                          threshold: float | None = None) -> dict[str, float]:
    """Plant every one of ``n_eval`` TeleQnA items (question + answer: the eval set ``eval.teleqna``, as the
    synth step passes eval items) in a row verbatim (``v``), once paraphrased (``p``: question and answer), and
    once with the question paraphrased and TeleQnA's longer explanation as a new answer (``x``: a teacher that
    rewords an eval question and writes its own answer); add ``n_unrelated`` rows made of other TeleQnA items
    and run ``sdk.synthfilter.contaminated``. Returns the recalls ``verbatim``, ``paraphrased`` and
    ``new_answer`` (share of planted rows flagged with their own item), ``false_positive`` (share of unrelated
    rows flagged), ``changed_words`` (share of content words the paraphraser changed), ``rows`` and ``seconds``
    (``contaminated`` alone)."""
    from sdk.synthfilter import contaminated
    from sdk.synthfilter_overlap import NEAR_THRESHOLD
    from sdk.synthfilter_text import content_words

    items = teleqna(data_dir)
    random.Random(seed).shuffle(items)
    evals, others = items[:n_eval], items[n_eval:n_eval + n_unrelated]
    eval_items = {"eval.teleqna": [(iid, f"{q} {a}") for iid, q, a, _ in evals]}
    rows = [{"id": f"v{iid}", "question": q, "answer": a} for iid, q, a, _ in evals]
    rows += [{"id": f"p{iid}", "question": paraphrase(q), "answer": paraphrase(a)} for iid, q, a, _ in evals]
    rows += [{"id": f"x{iid}", "question": paraphrase(q), "answer": x or a} for iid, q, a, x in evals]
    rows += [{"id": f"u{iid}", "question": q, "answer": a} for iid, q, a, _ in others]
    start = time.perf_counter()
    hits = contaminated(rows, eval_items, threshold=NEAR_THRESHOLD if threshold is None else threshold)
    seconds = time.perf_counter() - start

    def recall(prefix: str) -> float:
        return sum(hits.get(f"{prefix}{iid}", ("", ""))[1] == iid for iid, *_ in evals) / len(evals)

    def changed(text: str) -> float:
        before = set(content_words(text))
        return 1 - len(set(content_words(paraphrase(text))) & before) / max(1, len(before))

    return {"verbatim": recall("v"), "paraphrased": recall("p"), "new_answer": recall("x"),
            "false_positive": sum(f"u{iid}" in hits for iid, *_ in others) / max(1, len(others)),
            "changed_words": sum(changed(f"{q} {a}") for _, q, a, _ in evals) / len(evals), "rows": len(rows),
            "seconds": round(seconds, 2)}
