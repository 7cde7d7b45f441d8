"""Plan-time checks of the records beside the recipe that a step reads when it runs, by the code that reads them:

- an eval with human grading or the judge metric reads the experts' grades (``grades/<domain>/<eval>.jsonl``,
  :func:`sdk.grades.load`) after every system has answered: a bad line is a ``FILE:LINE`` plan error instead;
- a synth step reads the experts' review decisions (``reviews/<domain>/<synth>.jsonl``, :func:`sdk.reviews.load`)
  after the teacher has written every row;
- a route step counts its examples (its file and its eval sets' questions, each eval set read by
  :func:`sdk.evalsets.load_items`) with :func:`sdk.backends.routing.route.example_problem`, the rule the step
  applies before it trains: two targets at least, and enough examples to hold some out.

Each is read whole (these files are written by ``dsl ui`` and ``dsl review``, a line per decision or grade).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk.errors import DataError, DslError
from sdk.evalsets import source_key
from sdk.spec.paths import shown_path
from sdk.spec.values import Problem, parse_ref


def _relative(spec: Any, path: Path, e: DslError) -> tuple[str, str | None]:
    """The error's message with the file named relative to the recipe, and its hint."""
    hint = e.diagnostics[0].hint if e.diagnostics else None
    return str(e).replace(str(path), shown_path(path, spec.base_dir), 1), hint


def grades_problems(spec: Any, label: str, block: Any) -> list[Problem]:
    """The experts' grades an eval reads (human grading, or the judge's agreement with the experts)."""
    from sdk import grades as G

    if block.human is None and "judge" not in block.metrics:
        return []
    path = G.grades_path(spec.base_dir, spec.name, label)
    if not path.exists():
        return []
    at = ("eval", label, "human" if block.human is not None else "metrics")
    try:
        if not path.is_file():
            raise DataError(str(path), None, "the grades file is not a plain file")
        G.load(path)
    except (DataError, UnicodeDecodeError) as e:
        if isinstance(e, UnicodeDecodeError):
            return [Problem(path=at, message=f"{shown_path(path, spec.base_dir)}: not UTF-8 text ({e.reason} at byte {e.start})")]
        message, hint = _relative(spec, path, e)
        return [Problem(path=at, message=message, hint=hint)]
    return []


def decisions_problems(spec: Any, label: str, block: Any) -> list[Problem]:
    """The experts' review decisions a synth step applies to its rows."""
    from sdk import reviews
    from sdk.spec.blocks.synth import decisions_file

    path = decisions_file(spec, label)
    if not path.exists() and not path.is_symlink():
        return []
    at = ("synth", label, "review") if "review" in block.model_fields_set else ("synth", label)
    try:
        reviews.load(path, shown_path(path, spec.base_dir))
    except DataError as e:
        return [Problem(path=at, message=str(e), hint=e.diagnostics[0].hint if e.diagnostics else None)]
    return []


def route_problems(spec: Any, label: str, block: Any, examples: list[tuple[str, str]]) -> list[Problem]:
    """Whether the route step will have examples enough to train on: its file's (already read) and the questions
    of its eval sets, counted by the step's own rule."""
    from sdk.backends.routing.route import example_problem
    from sdk.evalsets import load_items

    rows = list(examples)
    for i, ref in enumerate(block.eval_sets):
        ev = spec.eval.get(ref.label) if spec.has(ref) else None
        data = getattr(ev, "data", None)
        if not isinstance(data, str) or not spec.resolve_path(data).is_file() or Path(data).suffix == ".zip" \
                or ev.password is not None:
            return []  # read when the step runs (an encrypted set, a synth step's items): not counted here
        try:
            rows += [(it.question, "domain") for it in load_items(spec.resolve_path(data), ev, data)]
        except DataError:
            return []  # the eval's own check names the bad row
    if not rows:  # an empty file (and no eval set): say so, not "found only none"
        at = ("route", label, "examples") if block.examples else ("route", label, "eval_sets")
        return [Problem(path=at, message=f"{block.examples or 'the eval sets'}: no examples",
                        hint="a row is {\"text\": \"...\", \"target\": \"domain\"} (or general, or a name of targets)")]
    problem = example_problem(rows, block)
    if problem is None:
        return []
    at = ("route", label, "examples") if block.examples else ("route", label, "eval_sets")
    shown = f"{block.examples}: " if block.examples else ""
    return [Problem(path=at, message=shown + problem[0], hint=problem[1])]


def adapt_problems(spec: Any, label: str, block: Any) -> list[Problem]:
    """``adapt = { pairs = eval.X }``: the eval set's items tagged ``train`` are the pairs, read as the rag step
    reads them (:func:`sdk.backends.rag.adapt_pairs.train_items`); ``pairs = dataset.X``: some row must name its
    gold chunk (``chunk_id``) or the documents it comes from (``sources``), or no pair is made."""
    from sdk.backends.rag.adapt_pairs import train_items
    from sdk.evalsets import load_items
    from sdk.jsonl import read_jsonl

    ref = block.adapt.pairs if block.adapt is not None else None
    source = spec.get(ref) if ref is not None and spec.has(ref) else None
    data = getattr(source, "data" if ref is not None and ref.kind == "eval" else "path", None)
    if source is None or ref.kind not in ("eval", "dataset") or not isinstance(data, str) \
            or not spec.resolve_path(data).is_file() or getattr(source, "password", None) is not None:
        return []
    at, path = ("rag", label, "adapt", "pairs"), spec.resolve_path(data)
    try:
        if ref.kind == "eval":
            train_items(load_items(path, source, data), str(ref))
            return []
        names = {"chunk_id", "chunk_ids", "sources"}  # what dataset_pairs reads of a row
        rows = [row for _, row in read_jsonl(path, data, objects=False) if isinstance(row, dict) and names & set(row)]
        named = [s for row in rows if "sources" in row and not {"chunk_id", "chunk_ids"} & set(row)
                 for s in (row["sources"] if isinstance(row["sources"], list) else [row["sources"]])]
        if rows and len(named) and not in_corpus(spec, block, named):
            return [Problem(path=at, message=f"adapt.pairs = {ref}: no source named by the rows of {data} is a file "
                            f"of {block.corpus} (e.g. {str(named[0])!r}), so no question-to-chunk pair can be made",
                            hint="sources are matched by file name without extension, e.g. \"sources\": [\"sip.md\"] "
                                 "for a corpus file docs/sip.md")]
        if rows:
            return []
    except DataError:
        return []  # the eval's or dataset's own check names the bad row
    except DslError as e:
        return [Problem(path=at, message=str(e))]
    return [Problem(path=at, message=f"adapt.pairs = {ref}: no row of {data} names its gold chunk (chunk_id) or the "
                                     "documents it comes from (sources), so no question-to-chunk pair can be made",
                    hint="give rows \"sources\": [\"doc.md\"] (a file of the rag's corpus), or use pairs = synth.X")]


def preference_warnings(block: Any, summary: dict[str, Any], at: tuple[Any, ...], whole: bool) -> list[Problem]:
    """What the align step warns about when it reads the file (pairs with chosen == rejected, KTO answers labelled
    both ways), said at plan time; every pair identical leaves nothing to learn: an error."""
    lines = lambda found: ", ".join(f"{block.pairs}:{n}" for n in found)  # noqa: E731
    same = summary.get("identical_pairs", 0)
    if same and same == summary["pairs"] and whole:
        return [Problem(path=at, message=f"{block.pairs}: every pair has chosen == rejected ({same} of {same}), so "
                                         "there is no preference to learn", hint="the rejected answer must differ")]
    if same:
        return [Problem(path=at, severity="warning", message=f"{same} pair{'s have' if same > 1 else ' has'} "
                        f"chosen == rejected (nothing to learn): {lines(summary['identical_lines'])}")]
    if summary.get("conflicting_labels"):
        return [Problem(path=at, severity="warning", message=f"{summary['conflicting_labels']} examples repeat a "
                        f"prompt and answer with the other label: "
                        f"{lines(a for a, _ in summary['conflicting_lines'])}")]
    return []


def in_corpus(spec: Any, block: Any, sources: list[Any]) -> bool:
    """Whether some source names a file of the rag's corpus, by stem as the adapt step matches them (True when the
    corpus' files cannot be listed here)."""
    from sdk.backends.rag.corpus import corpus_files

    corpus = spec.get(block.corpus) if spec.has(block.corpus) else None
    try:
        stems = {source_key(f.name) for f in corpus_files(spec, corpus)} if corpus is not None else set()
    except DslError:
        return True
    return not stems or any(source_key(s) in stems for s in sources)


def gold_source_problems(spec: Any, label: str, block: Any, items: list[Any], shown: str) -> list[Problem]:
    """A gate on a retrieval metric of a rag system whose corpus holds no file the items name as their gold sources
    (matched by stem, as the eval matches them): the metric is 0 on every item, and the gate decided before it runs."""
    from sdk.expr import metrics
    from sdk.spec.blocks.eval import RETRIEVAL_METRICS

    named = [s for it in items for s in it.sources]
    for m in metrics(block.gate) if block.gate is not None and named else []:
        ref = parse_ref(m.system) if m.metric in RETRIEVAL_METRICS and m.system.startswith("rag.") else None
        rag = spec.get(ref) if ref is not None and spec.has(ref) else None
        if rag is not None and not in_corpus(spec, rag, named):
            return [Problem(path=("eval", label, "gate"), focus=str(m), message=f"no gold source named by the items "
                            f"of {shown} is a file of {rag.corpus} (e.g. {named[0]!r}), so {m} is 0 on every item",
                            hint="sources are matched by file name without extension: \"sources\": [\"sip.md\"] "
                                 "for a corpus file docs/sip.md")]
    return []
