"""``eval LABEL { data = "x.jsonl"  systems = [...]  gate = ... }``: an expert eval set, systems side by side."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, field_serializer, model_validator
from pydantic_core import PydanticCustomError

from sdk import expr as _expr
from sdk.grades import DEFAULT_KAPPA, DEFAULT_MIN_ITEMS, judge_rule
from sdk.records.state import Status
from sdk.scoring import METRICS
from sdk.spec.kinds import Dep, declare, get_kind, kind_names
from sdk.spec.objects import Endpoint, FieldMap
from sdk.spec.paths import named_files, path_problem, shown_path
from sdk.spec.values import (
    Block,
    Expr,
    PositiveInt,
    Problem,
    Ref,
    Secret,
    Seed,
    TextOrFile,
    off_default,
    ref_of,
    refuse_unread,
    suggest,
)

# Metrics an eval can compute, from the metric registry (sdk.metrics: one function and its declaration each); a
# gate over any other metric is an error at plan time.
METRIC_NAMES: tuple[str, ...] = tuple(METRICS)
MetricName = Literal[METRIC_NAMES]  # type: ignore[valid-type]
# Metrics scored from what a system retrieved: a system that retrieves nothing (a model alone) never gets them.
RETRIEVAL_METRICS = ("recall_at_k", "mrr", "citation_precision", "citation_recall")
# Metrics from the experts' grades (human = { mode = ... }): the share of a system's answers they passed, and the
# share of pairs where they preferred a system's answer to the first system's (a tie counts half).
HUMAN_METRICS = {"human_pass": "pass_fail", "human_pref": "pairwise"}


def training_steps(spec: Any, systems: list[Any]) -> list[str]:
    """Corpus and dataset steps whose text the systems saw: pretrain corpora, SFT data, rag corpora (walking
    ``from`` chains and rag generators)."""
    seen: set[str] = set()
    out: list[str] = []

    def walk(ref: Any) -> None:
        kind, label = getattr(ref, "kind", None), getattr(ref, "label", None)
        if kind is None or f"{kind}.{label}" in seen:
            return
        seen.add(f"{kind}.{label}")
        blk = getattr(spec, kind, {}).get(label)
        if blk is None:
            return
        if kind in ("corpus", "dataset", "synth"):
            out.append(f"{kind}.{label}")
            return
        for attr in ("corpus", "data", "from_", "generator", "domain", "general"):  # domain, general: a router's
            walk(getattr(blk, attr, None))
        for target in (getattr(blk, "targets", None) or {}).values() if kind == "route" else ():
            walk(target)

    for s in systems:
        walk(s)
    if not out:  # systems trained elsewhere (hub models, endpoints): the recipe's own data is the best proxy
        out = [f"corpus.{label}" for label in spec.corpus] + [f"dataset.{label}" for label in spec.dataset]
    return sorted(out)


def _human_problem(spec: Any, m: _expr.Metric) -> Optional[tuple[str, Optional[str]]]:
    mode = HUMAN_METRICS[m.metric]
    graded = [ev for ev in spec.eval.values() if ev.human is not None and ev.human.mode == mode
              and m.system in [str(s) for s in ev.systems[(1 if mode == "pairwise" else 0):]]]
    if graded:
        return None
    if mode == "pairwise":
        return (f"no eval with human = {{ mode = pairwise }} compares {m.system} with its first system, so {m} is never "
                "measured", "list it after the system it is compared with, in an eval with human = { mode = pairwise }")
    return (f"no eval with human = {{ mode = pass_fail }} lists {m.system}, so {m} is never measured",
            "declare human = { mode = pass_fail } in an eval that lists it")


def metric_problem(spec: Any, m: _expr.Metric) -> Optional[tuple[str, Optional[str]]]:
    if m.metric in HUMAN_METRICS:
        return _human_problem(spec, m)
    produced = spec.produced_metrics()
    if m.metric not in METRIC_NAMES:
        return f"unknown metric {m.metric!r} in {m}", suggest(m.metric, METRIC_NAMES)
    if m.system not in produced:
        systems = sorted(produced)
        hint = suggest(m.system, systems)
        return (f"{m.system} is not a system of any eval block, so {m} is never measured",
                hint or (f"systems under eval: {', '.join(systems)}" if systems else None))
    if m.metric not in produced[m.system]:
        return (f"no eval computes {m.metric} for {m.system} (it gets {', '.join(sorted(produced[m.system]))})",
                f"add {m.metric} to the metrics of an eval that lists {m.system}")
    if m.metric in RETRIEVAL_METRICS and m.kind in kind_names() and get_kind(m.kind).is_model:
        why = f"{m.system} retrieves nothing, so {m} is never measured ({m.metric} scores what a rag system retrieved)"
        return why, "gate on a rag system's retrieval, or on an answer metric such as exact_match"
    if m.bound == "p_value" and not any(m.system in [str(s) for s in ev.systems[1:]] and m.metric in ev.metrics
                                        for ev in spec.eval.values()):
        return (f"{m} is the p-value of {m.system}'s difference from the first system of its eval, but "
                f"{m.system} is first (or not compared) in every eval that measures {m.metric}",
                "list the system you compare against first in the eval's systems")
    return None


def condition_problems(spec: Any, path: tuple, condition: Any) -> list[Problem]:
    out = []
    for m in _expr.metrics(condition) if condition is not None else []:
        problem = metric_problem(spec, m)
        if problem:
            out.append(Problem(path=path, message=problem[0], hint=problem[1], focus=str(m)))
    return out + range_problems(path, condition)


def _comparisons(node: Any) -> list[Any]:
    if isinstance(node, _expr.BinOp):
        here = [node] if node.op in _expr.CMP_OPS else []
        return here + _comparisons(node.left) + _comparisons(node.right)
    return _comparisons(node.operand) if isinstance(node, (_expr.Not, _expr.Neg)) else []


def range_problems(path: tuple, condition: Any) -> list[Problem]:
    """A metric compared with a constant outside the metric's range (``exact_match >= 60`` for 0.6): the comparison
    is decided before anything runs. Every metric but perplexity is a share between 0 and 1, and so is a p-value;
    perplexity is at least 1."""
    out = []
    for cmp in _comparisons(condition) if condition is not None else []:
        for m, const in ((cmp.left, cmp.right), (cmp.right, cmp.left)):
            if not isinstance(m, _expr.Metric) or _expr.metrics(const) or m.metric not in METRICS:
                continue
            value = _expr.evaluate(const, lambda _: 0.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            lo, hi, what = (1.0, float("inf"), "at least 1") if METRICS[m.metric].aggregate == "tokens" and \
                m.bound != "p_value" else (0.0, 1.0, "between 0 and 1")
            op = cmp.op if m is cmp.left else {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(cmp.op, cmp.op)
            edge = (op == ">" and value >= hi) or (op == "<" and value <= lo)  # metric > its maximum: never true
            if not lo <= value <= hi or edge:
                c = _expr.to_text(const)
                why = f"{c} is outside that range" if not edge else f"no value is {'above' if op == '>' else 'below'} {c}"
                out.append(Problem(path=path, message=f"{m} is {what}, so `{_expr.to_text(cmp)}` is decided before "
                                   f"anything runs ({why})",
                                   hint="metrics are shares: write 0.6, not 60" if value > 1 and hi == 1.0 else None,
                                   focus=str(m)))
    return out


def system_problems(spec: Any, label: str, block: Any) -> list[Problem]:
    """Systems that cannot answer (an architecture with no weights yet, directly or as a rag generator) and
    systems listed twice (answers are stored by system)."""
    out: list[Problem] = []
    seen: set[str] = set()
    answers = any(m not in RETRIEVAL_METRICS for m in block.metrics)
    for i, m in enumerate(block.metrics):
        if m in block.metrics[:i]:
            out.append(Problem(path=("eval", label, "metrics", i), message=f"metric {m} is listed twice"))
    for i, s in enumerate(block.systems):
        if not isinstance(s, Ref):
            continue
        at = ("eval", label, "systems", i)
        if str(s) in seen:
            out.append(Problem(path=at, message=f"{s} is listed twice in systems"))
        seen.add(str(s))
        model, blk = s, getattr(spec, s.kind, {}).get(s.label) if s.kind in kind_names() else None
        gen = getattr(blk, "generator", None) if s.kind == "rag" else None
        if isinstance(gen, Ref) and gen.kind == "base_model" and answers:  # a rag answers with its generator
            model, blk = gen, getattr(spec, "base_model", {}).get(gen.label)
        if model.kind == "base_model" and getattr(blk, "architecture", None) is not None:
            via = "" if model == s else f" (the generator of {s})"
            out.append(Problem(path=at, message=f"{model}{via} is an architecture with no weights (llama {{ ... }}): "
                               "it has nothing to answer with",
                               hint=f"evaluate the pretrain step that trains it (from = {model}), or a model with "
                                    "weights"))
    return out


def judge_gate_problems(spec: Any, label: str, block: Any, check_files: bool) -> list[Problem]:
    """A gate on the judge is refused until the judge agrees with the experts (judge_agreement): what the plan
    can know, no human grading or too few expert grades, is a located error here; the agreement itself is
    checked when the eval runs."""
    rule = block.judge_agreement
    judged = [m for m in (_expr.metrics(block.gate) if block.gate is not None else []) if m.metric == "judge"]
    if not judged or "judge" not in block.metrics or (rule is not None and not rule.required):
        return []
    kappa, need, _ = judge_rule(block)
    at = ("eval", label, "gate")
    why = f"{judged[0]} gates on an LLM judge, which is trusted only as far as it agrees with the experts " \
          f"(kappa >= {kappa} on >= {need} answers both graded)"
    if block.human is None:
        return [Problem(path=at, focus=str(judged[0]), message=f"{why}, and eval.{label} has no human grading",
                        hint="declare human = { mode = pass_fail }, apply without the judge gate, grade the answers "
                             "in dsl ui, then add the gate (or judge_agreement = { required = false })")]
    if not check_files:
        return []
    from sdk import grades as G

    try:
        graded, path = G.expert_graded(spec.base_dir, spec.name, label)
    except G.DataError as e:
        return [Problem(path=at, message=str(e), focus=str(judged[0]))]
    if graded < need:
        have = G.too_few_grades(graded, shown_path(path, spec.base_dir))
        return [Problem(path=at, focus=str(judged[0]), message=f"{why}; {have}",
                        hint=f"grade at least {need} answers in the Grade view of dsl ui (apply without the judge "
                             "gate first, so there are answers to grade)")]
    return []


def synth_data_problems(spec: Any, label: str, block: Any) -> list[Problem]:
    """``data = synth.X``: the eval scores the items experts accepted among a synth step's candidates, so that step
    must make eval items (task = eval) and keep only what an expert accepted or edited (review = required)."""
    ref = block.data
    if isinstance(ref, str) or not spec.has(ref):
        return []
    synth, at = spec.get(ref), ("eval", label, "data")
    if synth.task != "eval":
        return [Problem(path=at, message=f"{ref} makes {synth.task} rows (task = {synth.task}), not eval items: an "
                        "eval reads a synth step of task eval, whose candidates experts accept",
                        hint=f"write task = eval and review = required in {ref}, or name an eval set file")]
    if synth.review != "required":
        return [Problem(path=at, message=f"{ref} has review = {synth.review}: an eval scores only the candidates "
                        "an expert accepted or edited, never unreviewed ones", hint=f"write review = required in {ref}")]
    return []


def _check(spec: Any, label: str, block: Any, check_files: bool) -> list[Problem]:
    out = condition_problems(spec, ("eval", label, "gate"), block.gate) + system_problems(spec, label, block)
    out += judge_gate_problems(spec, label, block, check_files) + synth_data_problems(spec, label, block)
    problem = path_problem(spec, block.data) if check_files and isinstance(block.data, str) else None
    if problem:
        out.append(Problem(path=("eval", label, "data"), message=problem))
    return out


def _implicit(spec: Any, label: str, block: Any) -> list[Dep]:
    """Contamination is checked against the text the systems trained on: those data steps are inputs too."""
    if not block.contamination:
        return []
    return [(s, ("content",)) for s in training_steps(spec, [s for s in block.systems if isinstance(s, Ref)])]


def gated_systems(block: Any) -> list[str]:
    """The systems a failed gate withholds from serving: every system its condition names."""
    return sorted({m.system for m in _expr.metrics(block.gate)}) if block.gate is not None else []


def _facets(manifest: dict[str, Any]) -> dict[str, Any]:
    """What later steps read of an eval: its items (the route learns from the questions), its verdict (serving
    promotes by it) and its metrics (route thresholds). Changing max_new_tokens changes only the metrics."""
    from sdk.hashing import digest

    config = manifest.get("config") or {}
    data = config.get("data")
    data_hash = (manifest.get("files") or {}).get(data) if isinstance(data, str) else None
    if isinstance(data, dict):  # data = synth.X: the accepted items it gave
        data_hash = ((manifest.get("inputs") or {}).get(str(data.get("ref"))) or {}).get("digest")
    item_config = {k: config.get(k) for k in ("data", "format", "fields", "limit", "task")}
    gate = config.get("gate")
    return {"items": digest({"data": data_hash, "config": item_config}),
            "verdict": digest({"gate": gate, "passed": manifest.get("status") != Status.GATE_FAILED.value}),
            "metrics": digest(manifest.get("metrics") or {})}


def _config(spec: Any, block: Any) -> dict[str, Any]:
    """What enters the fingerprint: every attribute but ``batch_size``, which changes how fast the answers come,
    not which (so lowering it after running out of memory resumes from the answers already saved)."""
    config = block.model_dump(mode="json", by_alias=True)
    config.pop("batch_size", None)
    for name in ("human", "judge_agreement"):  # unset: the fingerprint of an eval from before they existed
        if config.get(name) is None:
            config.pop(name, None)
    return config


def _reads(spec: Any, block: Any) -> list[Any]:
    """The eval set and prompt files, and, with human grading or a judge, the experts' grades beside the recipe
    (new grades change the human metrics and the judge's standing, so the eval re-runs; its answers are reused)."""
    files = named_files(spec, block, ("data",))
    if block.human is not None or block.judge is not None:
        from sdk.grades import grades_path

        files.append(grades_path(spec.base_dir, spec.name, _label_of(spec, block)))
    return files


def _consumes(spec: Any, label: str, block: Any, dep: str) -> Optional[tuple[str, ...]]:
    """Of a synth step named by ``data``, the eval reads only the rows it kept (a decision that changes no kept row,
    a rejection of a pending candidate, re-runs nothing here); of every other input, all of it."""
    return ("rows",) if not isinstance(block.data, str) and dep == str(block.data) else None


def _label_of(spec: Any, block: Any) -> str:
    return next((label for label, b in spec.eval.items() if b is block), "")


class HumanGrading(Block):
    """``human = { mode = pass_fail, graders = 2, min_items = 60 }``: experts grade the answers in dsl ui."""

    mode: Literal["pass_fail", "pairwise"] = Field(default="pass_fail", description="pass_fail: each answer passes "
                                                   "or fails (with an error category); pairwise: which of two "
                                                   "answers is better")
    graders: PositiveInt = Field(default=1, description="Experts who grade each answer before an item counts as graded")
    min_items: Optional[PositiveInt] = Field(default=None, description="Graded items the human metrics wait for "
                                             "(default: every item)")


class JudgeAgreement(Block):
    """``judge_agreement = { kappa = 0.6, min_items = 50 }``: when the judge is trusted."""

    kappa: float = Field(default=DEFAULT_KAPPA, ge=-1.0, le=1.0, description="Least Cohen's kappa of judge and experts")
    min_items: PositiveInt = Field(default=DEFAULT_MIN_ITEMS, description="Least answers graded by both the judge and the experts")
    required: bool = Field(default=True, description="false: trust the judge without expert calibration")


@declare("eval", backend=("builtin", "sdk.backends.eval.evaluate:EvalBackend", "pip install 'domain-dsl[all]'"),
         check=_check, implicit=_implicit, facets=_facets, extra={"config": _config},
         reads=_reads, evaluates=True, consumes=_consumes)
class EvalBlock(Block):
    """An expert eval set, systems compared side by side on it, and an optional gate."""

    data: Union[str, ref_of("synth")] = Field(  # type: ignore[valid-type]
        description="Eval set: JSONL (or JSON, TSV, or an encrypted zip) relative to the recipe; or synth.X, a synth "
                    "step of task eval with review = required: the candidates experts accepted or edited")
    format: Literal["auto", "jsonl", "json", "tsv"] = Field(default="auto", description="File format of data")
    fields: FieldMap = Field(default_factory=FieldMap, description="Column mapping for public formats")
    password: Optional[Secret] = Field(default=None, description='Zip password, as env("NAME")')
    task: Literal["auto", "generate", "multiple_choice", "classification"] = Field(default="auto", description="How items are asked and scored")
    metrics: list[MetricName] = Field(default_factory=lambda: ["exact_match", "f1"], min_length=1, description="Metrics to compute")
    systems: list[Union[ref_of("@system", "route"), Endpoint]] = Field(  # type: ignore[valid-type]
        min_length=1, description="Systems compared on the same items; differences are against the first. "
                                  "route.default is the router: each item answered by the system it routes to"
    )
    gate: Optional[Expr] = Field(default=None, description="Condition that must hold, e.g. rag.docs.exact_match >= 0.5")
    limit: Optional[PositiveInt] = Field(default=None, description="Use only the first N items")
    seed: Seed = Field(default=0, description="Seed of the bootstrap and sampling")
    bootstrap: int = Field(default=1000, ge=100, le=100_000, description="Bootstrap resamples for confidence intervals")
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0, description="Confidence level of the intervals")
    contamination: bool = Field(default=True, description="Check n-gram overlap with training data")
    ngram: int = Field(default=13, ge=3, le=50, description="n of the contamination n-grams")
    fail_on_contamination: bool = Field(default=False, description="Make contamination an error")
    prompt: Optional[TextOrFile] = Field(default=None, description="Jinja2 template for asking a question")
    max_new_tokens: PositiveInt = Field(default=64, description="Longest generated answer")
    batch_size: PositiveInt = Field(default=16, description="Items a local model answers together (one generate call "
                                    "or forward pass per batch, sorted by length; the same greedy answers as one at a "
                                    "time); not part of the fingerprint")
    judge: Optional[Endpoint] = Field(default=None, description="LLM judge endpoint (off unless given)")
    rubric: Optional[TextOrFile] = Field(default=None, description="Rubric for the judge")
    human: Optional[HumanGrading] = Field(default=None, description="Expert grading in dsl ui: human_pass (or "
                                          "human_pref) per system, gates on it pending until enough grades")
    judge_agreement: Optional[JudgeAgreement] = Field(default=None, description="How far the judge must agree "
                                                      "with the experts before a gate trusts it (default kappa "
                                                      ">= 0.6 on >= 50 answers)")
    backend: Optional[str] = Field(default=None, description="Backend name (default: builtin)")

    @field_serializer("data")
    def _data_out(self, value: Any) -> Any:
        """A synth step dumps as ``{"ref": "synth.X"}``: validated again (an applied manifest's configuration), it is
        that step, never a file named ``synth.X``."""
        return value if isinstance(value, str) else {"ref": str(value)}

    @model_validator(mode="after")
    def _judge_needs_endpoint(self) -> "EvalBlock":
        if not isinstance(self.data, str):  # synth.X writes the eval-set format itself: nothing to map or unlock
            refuse_unread(off_default(self, ("format", "fields", "password")), "{names} {verb} to an eval set file, "
                          "not to {data} (a synth step writes its items in the eval-set format): drop {names}",
                          data=str(self.data))
        elif self.password is not None and not self.data.lower().endswith(".zip"):
            raise PydanticCustomError("incompatible", "password applies to an encrypted zip, and {data} is no zip: "
                                      "drop password", {"data": repr(self.data)[:80]})
        if "judge" in self.metrics and self.judge is None:
            raise PydanticCustomError("incompatible", "metric judge needs judge = endpoint { ... }", {})
        if self.human is not None and self.human.mode == "pairwise" and len(self.systems) < 2:
            raise PydanticCustomError("incompatible", "human = { mode = pairwise } asks experts which of two answers "
                                      "is better, and this eval has one system: list two or more, or use pass_fail", {})
        if not self.contamination:
            refuse_unread(off_default(self, ("ngram", "fail_on_contamination")), "{names} {verb} to the contamination "
                          "check, which contamination = false turns off: drop {names}")
        if "judge" not in self.metrics:  # judge, rubric and judge_agreement are read by the judge metric alone
            refuse_unread(off_default(self, ("judge", "rubric", "judge_agreement")), "{names} {verb} only with the "
                          "judge metric: add judge to metrics, or drop {names}")
        return self
