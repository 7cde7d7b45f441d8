"""Generate the quickstart's data: a fictional operator's cell-site handbook, its question/answer pairs, its eval set.

    python recipes/quickstart/make_data.py      # rewrites the files below; deterministic (fixed seed)

The generated files are committed, so `make demo` never runs this script. What it writes, next to itself:

- corpus/archive/sites-NN.md   200 site sheets: what the model is pre-trained on;
- corpus/tuning/sites-NN.md    400 other sites: what the fine-tuning questions are about (the model sees these
                               sheets only through retrieval, so it cannot answer them from pre-training memory);
- corpus/new/NAME.md           20 sites "commissioned later", one file each: only the retrieval corpus has them;
- sft.jsonl                    every parameter of every tuning site (3200 pairs), answered by the bare value
                               after a space (" 512 ms": the space makes its tokens those of the sheet's line);
- eval.jsonl                   3 questions on each new site (60 items), the value, and the sheet that holds it.

A sheet has one line per parameter (band, PCI, tracking area, T3412 timer, DRX cycle, peak rate, antenna tilt,
P-CSCF), each naming the site ("The DRX cycle of site Bage lasts 512 ms."), in a shuffled order; site names are
letters only, so the only digits of a line are its value. Every answer is a span of one line: a model that has
learned to copy the value out of the line it is given answers any site, including one it never saw, as long as
retrieval hands it that site's line.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 15
ARCHIVE_SITES, TUNING_SITES, NEW_SITES, QUESTIONS_PER_SITE, PER_FILE = 100, 200, 20, 3, 20

DISTRICTS = ["Harbor", "Old Town", "Riverside", "Airport", "University", "Market", "Stadium", "Hillcrest",
             "Docklands", "Westgate", "Northfield", "Lakeside", "Railway", "Cathedral", "Industrial Park",
             "Seafront", "Eastbrook", "Mill Lane", "Castle Hill", "Greenway"]

# parameter -> (sentence in the sheet, question templates, value maker). The word before each value differs from
# sentence to sentence (band, PCI, TAC, to, lasts, reaches, by, via), so the value is found by what precedes it.
PARAMS = {
    "band": ("Site {s} transmits on band {v}.",
             ["Which band does site {s} transmit on?", "On which frequency band does site {s} operate?"],
             lambda r: r.choice(["n1", "n3", "n7", "n8", "n20", "n28", "n38", "n41", "n77", "n78", "n79"])),
    "pci": ("The physical cell identity of site {s} is PCI {v}.",
            ["What is the PCI of site {s}?", "Which physical cell identity does site {s} use?"],
            lambda r: str(r.randrange(1, 504))),
    "tac": ("Site {s} belongs to tracking area TAC {v}.",
            ["What is the tracking area code of site {s}?", "Which TAC does site {s} belong to?"],
            lambda r: str(r.randrange(1000, 10000))),
    "t3412": ("The periodic T3412 timer of site {s} is set to {v}.",
              ["What is the T3412 timer at site {s}?", "How long is the periodic T3412 timer of site {s}?"],
              lambda r: f"{r.choice([6, 12, 18, 24, 30, 36, 42, 48, 54, 60, 72, 90, 120, 180])} minutes"),
    "drx": ("The DRX cycle of site {s} lasts {v}.",
            ["What DRX cycle does site {s} use?", "How long is the DRX cycle at site {s}?"],
            lambda r: f"{r.choice([32, 64, 128, 160, 256, 320, 512, 640, 1280, 2560])} ms"),
    "rate": ("The peak downlink rate of site {s} reaches {v}.",
             ["What is the peak downlink rate of site {s}?", "How fast is the downlink of site {s} at its peak?"],
             lambda r: f"{r.randrange(3, 41) * 50} Mbps"),
    "tilt": ("The antenna of site {s} is tilted by {v}.",
             ["What is the antenna tilt at site {s}?", "How far is the antenna of site {s} tilted?"],
             lambda r: f"{r.randrange(2, 13)} degrees"),
    "pcscf": ("VoLTE calls of site {s} register via {v}.",
              ["Which P-CSCF serves VoLTE calls at site {s}?", "Through which P-CSCF do VoLTE calls of site {s} register?"],
              lambda r: f"pcscf-{r.randrange(1, 40)}"),
}


def site_codes(r: random.Random, n: int) -> list[str]:
    """Site names such as Tamu or Kelo: letters only, so the only digits of a sheet line are its value."""
    consonants, vowels = "BDFGKLMNPRSTVZ", "aeiou"
    codes: list[str] = []
    while len(codes) < n:
        code = r.choice(consonants) + r.choice(vowels) + r.choice(consonants).lower() + r.choice(vowels)
        if code not in codes:
            codes.append(code)
    return codes


def make_site(r: random.Random, code: str) -> tuple[str, dict[str, str]]:
    """A site's sheet: one line per parameter, each naming the site, in a shuffled order."""
    values = {p: maker(r) for p, (_, _, maker) in PARAMS.items()}
    order = list(PARAMS)
    r.shuffle(order)
    lines = [PARAMS[p][0].format(s=code, v=values[p]) for p in order]
    return "\n".join(lines), values


def question(r: random.Random, param: str, code: str) -> str:
    return r.choice(PARAMS[param][1]).format(s=code)


def main() -> None:
    r = random.Random(SEED)
    codes = site_codes(r, ARCHIVE_SITES + TUNING_SITES + NEW_SITES)
    sites = [(c, *make_site(r, c)) for c in codes]
    archive, tuning, new = (sites[:ARCHIVE_SITES], sites[ARCHIVE_SITES:ARCHIVE_SITES + TUNING_SITES],
                            sites[ARCHIVE_SITES + TUNING_SITES:])
    corpus = HERE / "corpus"
    for part, group in (("archive", archive), ("tuning", tuning), ("new", new)):
        folder = corpus / part
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.md"):
            old.unlink()
        if part == "new":  # one file per site, so that an eval item names the very sheet that answers it
            for code, sheet, _ in group:
                (folder / f"{code}.md").write_text(sheet + "\n", encoding="utf-8")
            continue
        for i in range(0, len(group), PER_FILE):
            text = "\n".join(sheet for _, sheet, _ in group[i:i + PER_FILE])
            (folder / f"sites-{i // PER_FILE + 1:02d}.md").write_text(text + "\n", encoding="utf-8")
    rows = []
    for code, _, values in tuning:
        for param in sorted(PARAMS):
            rows.append({"messages": [{"role": "user", "content": question(r, param, code)},
                                      {"role": "assistant", "content": " " + values[param]}]})
    r.shuffle(rows)
    with open(HERE / "sft.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    items = []
    for code, _, values in new:
        for param in r.sample(sorted(PARAMS), QUESTIONS_PER_SITE):
            items.append({"id": f"{code}-{param}", "question": question(r, param, code), "answer": [values[param]],
                          "sources": [f"quickstart/corpus/new/{code}.md"], "tags": [param, "new-site"]})
    with open(HERE / "eval.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(item) + "\n" for item in items)


if __name__ == "__main__":
    main()
