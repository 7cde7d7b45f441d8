"""Generate the quickstart's data: a fictional operator's cell-site handbook, its question/answer pairs, its eval set.

    python recipes/quickstart/make_data.py      # rewrites the files below; deterministic (fixed seed)

The generated files are committed, so `make demo` never runs this script. What it writes, next to itself:

- corpus/archive/sites-NN.md   200 site sheets: what the model is pre-trained on;
- corpus/tuning/sites-NN.md    400 other sites: what the fine-tuning questions are about (the model sees these
                               sheets only through retrieval, so it cannot answer them from pre-training memory);
- corpus/new/NAME.md           20 sites "commissioned later", one file each: only the retrieval corpus has them;
- sft.jsonl                    every parameter of every tuning site (3200 pairs), answered by the bare value
                               after a space (" 512 ms": the space makes its tokens those of the sheet's line);
- eval.jsonl                   3 questions on each new site (60 items), the value, and the sheet that holds it;
- route.jsonl                  the router's examples: 200 questions about archive and tuning sites, in the eval's
                               phrasing families but never an eval item (target "domain"), and 200 general questions,
                               some using the handbook's words in their everyday sense (target "general").

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
    examples = route_examples(random.Random(SEED + 1), [c for c, _, _ in archive + tuning], {it["question"] for it in items})
    with open(HERE / "route.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in examples)


# General questions for the router: everyday topics, and the handbook's words (band, site, timer, cycle, rate,
# antenna, cell) in their everyday sense, so that the router learns what makes a question the handbook's.
GENERAL = [
    ("What is the capital of {}?", ["Peru", "Kenya", "Canada", "Norway", "Vietnam", "Chile", "Egypt", "Poland"]),
    ("How do I cook {}?", ["risotto", "a boiled egg", "pancakes", "lentil soup", "fresh pasta", "brown rice"]),
    ("Who wrote {}?", ["War and Peace", "Don Quixote", "Pride and Prejudice", "The Odyssey", "Moby-Dick"]),
    ("What is {} times {}?", [("17", "23"), ("12", "48"), ("9", "81"), ("31", "7"), ("64", "15")]),
    ("How far is {} from {}?", [("Paris", "Rome"), ("Lisbon", "Madrid"), ("Oslo", "Berlin"), ("Cairo", "Athens")]),
    ("Translate '{}' into {}.", [("good morning", "Spanish"), ("thank you", "German"), ("see you soon", "Italian"),
                                 ("where is the station", "French")]),
    ("Which band recorded the album {}?", ["Abbey Road", "Rumours", "OK Computer", "Nevermind", "Thriller"]),
    ("Which band played {}?", ["at Woodstock in 1969", "the first Live Aid set", "the halftime show in 2011",
                               "Glastonbury's main stage in 1997"]),
    ("Who is the drummer of the band {}?", ["Queen", "Metallica", "Coldplay", "the Rolling Stones"]),
    ("What is a good {} site near {}?", [("camping", "Denver"), ("picnic", "Lyon"), ("fishing", "Bergen"),
                                        ("hiking", "Zurich")]),
    ("How long is the life cycle of a {}?", ["butterfly", "frog", "honeybee", "salmon", "mosquito"]),
    ("How do I set a timer on {}?", ["my phone", "an oven", "a smartwatch", "a microwave"]),
    ("What is the interest rate on {}?", ["a savings account", "a mortgage", "a car loan", "a credit card"]),
    ("How do I install {} antenna?", ["a TV", "a car radio", "an outdoor", "a loft"]),
    ("How does a {} cell work?", ["solar", "fuel", "red blood", "plant"]),
    ("Recommend a {} about {}.", [("novel", "the sea"), ("podcast", "history"), ("film", "space"),
                                  ("documentary", "birds"), ("board game", "trains")]),
    ("Why is the sky {}?", ["blue", "red at sunset", "dark at night"]),
    ("How many {} does a {} have?", [("legs", "spider"), ("bones", "human"), ("hearts", "octopus"),
                                     ("teeth", "shark"), ("moons", "Mars")]),
    ("How do I {}?", ["fix a flat tyre", "learn to swim", "write a cover letter", "train for a marathon",
                      "change a car's oil", "get rid of hiccups", "meditate", "grow tomatoes", "tie a bowline knot",
                      "remove a wine stain", "negotiate a raise", "start a vegetable garden"]),
    ("What is the difference between {} and {}?", [("weather", "climate"), ("a virus", "a bacterium"),
                                                  ("baking soda", "baking powder"), ("a list", "a tuple"),
                                                  ("speed", "velocity")]),
    ("Explain {} simply.", ["compound interest", "gradient descent", "photosynthesis", "inflation", "black holes",
                            "the French subjunctive", "plate tectonics"]),
    ("When was {} invented?", ["the printing press", "the telephone", "the bicycle", "paper", "the compass"]),
    ("Plan a weekend in {}.", ["Barcelona", "Kyoto", "Prague", "Edinburgh", "Istanbul"]),
    ("Who painted {}?", ["The Starry Night", "the Mona Lisa", "Guernica", "The Night Watch"]),
    ("Write a {} about {}.", [("limerick", "a cat"), ("haiku", "rain"), ("short poem", "autumn"),
                              ("birthday message", "my sister")]),
    ("How do I {} in Python?", ["reverse a string", "merge two dicts", "read a CSV file", "sort a list of tuples"]),
    ("What is the population of {}?", ["Tokyo", "Brazil", "Iceland", "Lagos", "Australia", "Mexico City"]),
    ("What are the symptoms of {}?", ["the flu", "dehydration", "a migraine", "hay fever", "a sprained ankle"]),
    ("Is it safe to {}?", ["eat raw cookie dough", "swim after eating", "charge a phone overnight",
                           "drink tap water in Lisbon", "run every day"]),
    ("What should I pack for {}?", ["a week in Iceland", "a beach holiday", "a ski trip", "a business trip"]),
    ("Who was {}?", ["Ada Lovelace", "Nikola Tesla", "Marie Curie", "Genghis Khan", "Frida Kahlo",
                     "Alan Turing"]),
    ("What does the word '{}' mean?", ["serendipity", "ephemeral", "ubiquitous", "melancholy", "quixotic"]),
    ("How long should I {}?", ["boil pasta", "steep green tea", "rest a steak", "sleep each night",
                               "bake a sponge cake"]),
    ("Which {} is the largest in the world?", ["ocean", "desert", "country", "lake", "rainforest"]),
    ("What is a good {} for beginners?", ["guitar", "camera", "programming language", "houseplant", "yoga pose",
                                          "chess opening"]),
    ("Why do {}?", ["cats purr", "leaves change colour in autumn", "we dream", "onions make you cry",
                    "birds migrate", "bread rise"]),
    ("How do I convert {} to {}?", [("Celsius", "Fahrenheit"), ("miles", "kilometres"), ("cups", "grams"),
                                    ("a PDF", "a Word file")]),
    ("What time is it in {} now?", ["Tokyo", "New York", "Sydney", "Nairobi"]),
]


def route_examples(r: random.Random, codes: list[str], eval_questions: set[str], n: int = 200) -> list[dict[str, str]]:
    """The router's examples: ``n`` questions about the archive and tuning sites (the eval's templates; the new
    sites are never named, so no eval item is among them) and ``n`` general questions, shuffled."""
    domain: list[str] = []
    while len(domain) < n:
        text = question(r, r.choice(sorted(PARAMS)), r.choice(codes))
        if text not in domain and text not in eval_questions:
            domain.append(text)
    general = sorted({template.format(*(f if isinstance(f, tuple) else (f,))) for template, fills in GENERAL
                      for f in fills})
    general = r.sample(general, min(n, len(general)))
    rows = [{"text": t, "target": "domain"} for t in domain] + [{"text": t, "target": "general"} for t in general]
    r.shuffle(rows)
    return rows


if __name__ == "__main__":
    main()
