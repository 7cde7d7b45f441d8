"""An applied synth step made by hand for the review tests: a small recipe, and a state entry ``synth.ops`` whose
artifact folder holds ``candidates.jsonl`` and a manifest, the way the synth step leaves them (docs/data.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECIPE = '''domain rev {
  corpus c { paths = ["docs/*.txt"]  min_chars = 5  split = { by = line, length = 1, overlap = 0 } }
}
'''
CHUNKS = ["An INVITE request starts a SIP call.", "BYE ends a SIP call.", "The HSS stores subscribers.",
          "The S-CSCF handles SIP registration.", "A P-CSCF is the first SIP contact point."]
QUESTIONS = [("Which SIP request starts a call?", "INVITE starts a SIP call."),
             ("What ends a SIP call?", "BYE ends a SIP call."),
             ("What stores subscribers?", "The HSS stores subscribers."),
             ("What handles SIP registration?", "The S-CSCF handles SIP registration."),
             ("What is the first SIP contact point?", "The P-CSCF.")]


def candidate_rows() -> list[dict[str, Any]]:
    return [{"id": f"{i:016x}", "task": "qa", "chunk_id": f"docs/sip.txt#{i}", "source": f"docs/sip.txt:{i + 1}",
             "chunk": CHUNKS[i], "question": q, "answer": a} for i, (q, a) in enumerate(QUESTIONS)]


def applied_synth(tmp: Path, label: str = "ops") -> dict[str, Any]:
    """The recipe, its workdir and state with an applied ``synth.<label>`` holding :func:`candidate_rows`."""
    from sdk.integrity import record

    (tmp / "docs").mkdir(parents=True, exist_ok=True)
    (tmp / "docs" / "sip.txt").write_text("\n".join(CHUNKS) + "\n")
    recipe = tmp / "r.dsl"
    recipe.write_text(RECIPE)
    workdir = tmp / ".dsl" / "rev"
    rel = f"artifacts/synth.{label}/0123456789ab"
    folder = workdir / rel
    folder.mkdir(parents=True)
    rows = candidate_rows()
    (folder / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "manifest.json").write_text(json.dumps({"outputs": {"candidates": "candidates.jsonl"},
                                                      "written": record(folder)}))
    steps = {f"synth.{label}": {"status": "done", "artifact": rel, "backend": "teacher", "fingerprint": "0" * 64}}
    (workdir / "state.json").write_text(json.dumps({"version": 2, "lineage": "review-test", "serial": 1,
                                                    "domain": "rev", "steps": steps, "hashes": {}}))
    return {"dir": tmp, "recipe": recipe, "workdir": workdir, "rows": rows,
            "decisions": tmp / "reviews" / "rev" / f"{label}.jsonl"}
