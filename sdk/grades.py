"""Expert grades of eval answers: the append-only store beside the recipe, inter-annotator agreement (Cohen's
kappa, Krippendorff's alpha) and a judge's agreement with the experts (kappa, true-positive and true-negative
rates), and :func:`judge_trusted`, the one rule every user of an LLM judge asks.

The grades of eval ``LABEL`` live in ``<recipe folder>/grades/<domain>/LABEL.jsonl``, one JSON object a line:
``{"item", "answer" (16-hex hash of the graded text), "system" (stored, never shown to the grader), "grader",
"verdict": "pass"|"fail", "category" (fail only), "at"}``, or for a pairwise preference ``{"item", "answers":
[hashA, hashB], "prefer": hash | "tie", "grader", "at"}``. The last line of a grader for an answer (or a pair)
wins; earlier lines are history. Expert work is an input, not cache: the file is part of the eval's fingerprint.

Nothing here imports state, plans or backends (the spec's plan-time checks read the grades through it)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sdk.errors import DataError
from sdk.hashing import file_sha256
from sdk.records.files import read_text_nofollow
from sdk.records.state import parse_state

CATEGORIES = ("wrong_fact", "wrong_citation", "missing_citation", "unsupported", "incomplete", "other")
MODES = ("pass_fail", "pairwise")
JUDGE_PASS = 0.5  # a judge score (1-5 mapped to 0-1) of at least this, i.e. 3 of 5, is the judge's "pass"
_HEX16 = re.compile(r"^[0-9a-f]{16}$")


def answer_hash(text: str) -> str:
    """The 16-hex identity of an answer's text (surrounding white space ignored): a grade belongs to the text it
    graded, so a retrained system's new answer is graded again and two systems giving the same text share it."""
    return hashlib.sha256(str(text).strip().encode("utf-8")).hexdigest()[:16]


def grades_path(recipe_path: str | Path, domain: str, label: str) -> Path:
    """``<recipe folder>/grades/<domain>/<label>.jsonl``; ``recipe_path`` is the recipe file or its folder."""
    p = Path(recipe_path)
    folder = p.parent if p.suffix else p
    return folder / "grades" / domain / f"{label}.jsonl"


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_entry(entry: Any) -> str | None:
    """Why ``entry`` is not a grade line (None when it is one)."""
    if not isinstance(entry, dict):
        return "a grade is a JSON object"
    for key in ("item", "grader"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            return f"{key!r} must be a non-empty string"
    if "answers" in entry:
        answers = entry["answers"]
        if not (isinstance(answers, list) and len(answers) == 2 and all(isinstance(a, str) and _HEX16.match(a)
                                                                        for a in answers) and answers[0] != answers[1]):
            return "'answers' must hold two different 16-hex answer hashes"
        if entry.get("prefer") not in (*answers, "tie"):
            return "'prefer' must be one of the two answer hashes or \"tie\""
        return None
    if not isinstance(entry.get("answer"), str) or not _HEX16.match(entry["answer"]):
        return "'answer' must be the 16-hex hash of the graded answer"
    if entry.get("verdict") not in ("pass", "fail"):
        return "'verdict' must be \"pass\" or \"fail\""
    category = entry.get("category")
    if entry["verdict"] == "fail" and category is not None and category not in CATEGORIES:
        return f"'category' must be one of {', '.join(CATEGORIES)}"
    if entry["verdict"] == "pass" and category is not None:
        return "'category' applies only to a failed answer"
    return None


def load(path: str | Path) -> list[dict[str, Any]]:
    """Every grade line of ``path`` in order (an absent file: none); a bad line is a located error FILE:LINE."""
    p = Path(path)
    if not p.is_file():
        return []
    out = []
    for n, line in enumerate(p.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(str(p), n, f"not JSON ({e.msg} at column {e.colno})") from None
        problem = check_entry(entry)
        if problem:
            raise DataError(str(p), n, problem, hint="each line is one grade: see docs/data.md, Expert grading")
        out.append(entry)
    return out


def append(path: str | Path, entries: list[dict[str, Any]]) -> None:
    """Validate ``entries`` (``at`` filled in when missing) and append them under an exclusive lock, one write."""
    import fcntl

    rows = []
    for i, e in enumerate(entries):
        e = {**e, "at": e.get("at") or now()}
        problem = check_entry(e)
        if problem:
            raise ValueError(f"grade {i + 1}: {problem}")
        rows.append(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, "".join(rows).encode("utf-8"))
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def verdicts(grades: Iterable[dict[str, Any]]) -> dict[tuple[str, str], dict[str, bool]]:
    """(item, answer hash) -> {grader: passed}: the last pass/fail line of each grader wins."""
    out: dict[tuple[str, str], dict[str, bool]] = defaultdict(dict)
    for g in grades:
        if "verdict" in g:
            out[(g["item"], g["answer"])][g["grader"]] = g["verdict"] == "pass"
    return dict(out)


def preferences(grades: Iterable[dict[str, Any]]) -> dict[tuple[str, frozenset[str]], dict[str, str]]:
    """(item, {hashA, hashB}) -> {grader: preferred hash or "tie"}: the last line of each grader wins."""
    out: dict[tuple[str, frozenset[str]], dict[str, str]] = defaultdict(dict)
    for g in grades:
        if "prefer" in g:
            out[(g["item"], frozenset(g["answers"]))][g["grader"]] = g["prefer"]
    return dict(out)


def expert_graded(recipe_path: str | Path, domain: str, label: str) -> tuple[int, Path]:
    """How many answers of eval ``label`` have an expert verdict (the majority of their grades), and the grades file
    it counted (a bad line is a DataError)."""
    path = grades_path(recipe_path, domain, label)
    return sum(majority(v) is not None for v in verdicts(load(path)).values()), path


def too_few_grades(graded: int, shown: str) -> str:
    """What a plan says of a grades file (named ``shown``) holding too few expert verdicts."""
    return f"only {graded} answers have an expert verdict in {shown}" if graded else f"{shown} holds no grades yet"


def majority(votes: dict[str, bool]) -> bool | None:
    """The experts' verdict on one answer: the majority of its graders (a tie: no verdict)."""
    yes = sum(votes.values())
    no = len(votes) - yes
    return None if yes == no else yes > no


# ------------------------------------------------------------------------------------------- agreement

def cohen_kappa(a: list[Any], b: list[Any]) -> float:
    """Cohen's kappa of two raters' labels on the same units: (p_o - p_e) / (1 - p_e); 1.0 when both raters used
    one and the same label throughout (nothing left to agree on by chance), nan for no units."""
    if len(a) != len(b):
        raise ValueError("the two raters must label the same units")
    n = len(a)
    if n == 0:
        return float("nan")
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    if expected >= 1.0:
        return 1.0 if observed == 1.0 else 0.0
    return (observed - expected) / (1 - expected)


def krippendorff_alpha(table: list[list[float | None]]) -> float:
    """Krippendorff's alpha (nominal) of a raters x units table (None: the rater did not grade that unit), by the
    ``krippendorff`` package; nan when fewer than two units have two ratings."""
    import numpy as np

    paired = sum(sum(v is not None for v in col) >= 2 for col in zip(*table)) if table else 0
    if len(table) < 2 or paired < 1:
        return float("nan")
    import krippendorff

    data = np.array([[np.nan if v is None else float(v) for v in row] for row in table], dtype=float)
    values = set(data[~np.isnan(data)].tolist())
    if len(values) < 2:  # every rating the same: perfect agreement, which the package cannot divide out
        return 1.0
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))


def expert_agreement(grades: list[dict[str, Any]]) -> dict[str, Any]:
    """Inter-annotator agreement of the experts: over answers (or pairs) that two or more graders graded, Cohen's
    kappa when exactly two graders took part, Krippendorff's alpha in every case (nominal)."""
    units: dict[Any, dict[str, Any]] = {}
    for (item, answer), votes in verdicts(grades).items():
        units[("v", item, answer)] = {g: int(v) for g, v in votes.items()}
    for (item, pair), prefs in preferences(grades).items():  # label a preference by its position in the sorted pair
        order = sorted(pair)
        units[("p", item, tuple(order))] = {g: (2 if p == "tie" else order.index(p)) for g, p in prefs.items()}
    graders = sorted({g for votes in units.values() for g in votes})
    shared = [u for u in units.values() if len(u) >= 2]
    out: dict[str, Any] = {"graders": graders, "units": len(shared)}
    if len(graders) < 2 or not shared:
        return out
    if len(graders) == 2:
        both = [u for u in shared if all(g in u for g in graders)]
        out["kappa"] = _round(cohen_kappa([u[graders[0]] for u in both], [u[graders[1]] for u in both]))
    table = [[u.get(g) for u in shared] for g in graders]
    out["alpha"] = _round(krippendorff_alpha(table))
    return out


def judge_agreement(judge: dict[tuple[str, str], float], grades: list[dict[str, Any]]) -> dict[str, Any]:
    """How far a judge agrees with the experts, on the answers both graded: ``judge`` maps (item, answer hash) to
    the judge's 0-1 score (pass at :data:`JUDGE_PASS`), the experts' verdict is each answer's majority. Returns
    n, kappa, tpr (judge passes what experts pass), tnr (judge fails what experts fail), agreement."""
    pairs = []
    for key, votes in verdicts(grades).items():
        expert = majority(votes)
        score = judge.get(key)
        if expert is None or score is None or (isinstance(score, float) and math.isnan(score)):
            continue
        pairs.append((expert, score >= JUDGE_PASS))
    out: dict[str, Any] = {"n": len(pairs)}
    if not pairs:
        return out
    pos = [j for e, j in pairs if e]
    neg = [j for e, j in pairs if not e]
    out["kappa"] = _round(cohen_kappa([e for e, _ in pairs], [j for _, j in pairs]))
    out["tpr"] = _round(sum(pos) / len(pos)) if pos else None
    out["tnr"] = _round(sum(not j for j in neg) / len(neg)) if neg else None
    out["agreement"] = _round(sum(e == j for e, j in pairs) / len(pairs))
    return out


DEFAULT_KAPPA, DEFAULT_MIN_ITEMS = 0.6, 50  # the judge_agreement an eval gets where it declares none


def judge_rule(block: Any) -> tuple[float, int, bool]:
    """(kappa, min_items, required) of an eval's ``judge_agreement``, its defaults where unset: the one place the
    gate check, the synth filter's judge and the reward's judge read the threshold from."""
    rule = getattr(block, "judge_agreement", None)
    return (rule.kappa, rule.min_items, rule.required) if rule is not None else (DEFAULT_KAPPA, DEFAULT_MIN_ITEMS, True)


def trust_verdict(agreement: dict[str, Any], kappa: float, min_items: int) -> tuple[bool, str]:
    """Whether an agreement reaches the declared threshold, and a sentence saying why (or why not)."""
    n, k = agreement.get("n", 0), agreement.get("kappa")
    if n < min_items:
        return False, (f"the judge and the experts graded {n} answers in common, fewer than the {min_items} "
                       f"judge_agreement asks; grade more answers in the Grade view (dsl ui)")
    if k is None or (isinstance(k, float) and math.isnan(k)) or k < kappa:
        return False, (f"the judge agrees with the experts at kappa {k} on {n} answers, below the {kappa} "
                       "judge_agreement asks (tpr "
                       f"{agreement.get('tpr')}, tnr {agreement.get('tnr')}); fix the rubric or the judge")
    return True, f"the judge agrees with the experts at kappa {k} on {n} answers (at least {kappa} on {min_items})"


def _round(x: float) -> float:
    return round(x, 4) if not math.isnan(x) else x


def judge_trusted(recipe_path: str | Path, spec: Any, eval_label: str,
                  workdir: str | Path | None = None) -> tuple[bool, str]:
    """Whether the judge of eval ``eval_label`` may be trusted (as a gate, a synth filter or a reward): its
    agreement with the experts, on the answers of the eval's last applied run that both graded, reaches the
    eval's ``judge_agreement`` (default kappa >= 0.6 on >= 50 answers). Returns (trusted, the reason). The
    workdir defaults to the recipe's own, ``.dsl/<domain>/`` beside it."""
    block = getattr(spec, "eval", {}).get(eval_label)
    if block is None:
        return False, f"no eval {eval_label!r} in the recipe calibrates the judge"
    if getattr(block, "judge", None) is None:
        return False, f"eval.{eval_label} has no judge (judge = endpoint {{ ... }} with the judge metric)"
    kappa, min_items, required = judge_rule(block)
    if not required:
        return True, f"eval.{eval_label} trusts its judge without expert calibration (judge_agreement required = false)"
    path = grades_path(recipe_path, spec.name, eval_label)
    grades = load(path)
    if not grades:
        return False, f"no expert grades in {path} yet: grade the answers of eval.{eval_label} in dsl ui"
    wd = Path(workdir) if workdir is not None else Path(spec.base_dir) / ".dsl" / spec.name  # sdk.workdirs' rule
    folder, damage = applied_eval(wd, f"eval.{eval_label}")
    if damage:
        return False, (f"the artifact of eval.{eval_label} is damaged ({damage}): its judge scores are not "
                       "trusted; dsl verify names it, dsl apply replaces it")
    if folder is None or not (folder / "predictions.jsonl").is_file():
        return False, f"eval.{eval_label} has not been applied: the judge has graded nothing to compare"
    return trust_verdict(judge_agreement(judge_scores(_rows(folder / "predictions.jsonl")), grades), kappa, min_items)


def applied_eval(workdir: Path, step_id: str) -> tuple[Path | None, str | None]:
    """(the artifact folder the workdir's state records for ``step_id``, why it is damaged): the folder only when
    it lies inside ``workdir/artifacts`` and its manifest and files are as applied (``dsl verify``'s check, every
    file hashed), never another folder of answers found beside it."""
    path = Path(workdir) / "state.json"
    if not path.is_file():
        return None, None
    try:
        entry = parse_state(read_text_nofollow(path), path)["steps"].get(step_id) or {}
    except OSError as e:
        return None, f"its state file is unreadable ({type(e).__name__})"
    rel = entry.get("artifact")
    if not isinstance(rel, str) or not rel:
        return None, None
    root, folder = (Path(workdir) / "artifacts").resolve(), (Path(workdir) / rel).resolve()
    if Path(rel).is_absolute() or folder == root or not folder.is_relative_to(root) or not folder.is_dir():
        return None, None
    return folder, _damage(folder, entry.get("manifest_sha256"))


def _damage(folder: Path, expected: str | None) -> str | None:
    """Why an artifact folder is not as applied (``dsl verify``'s check of sdk.integrity, every file hashed; that
    module is not imported here: the spec imports this one), or None."""
    try:
        if expected and file_sha256(folder / "manifest.json", follow=False) != expected:
            return "manifest.json content differs from what was applied (edited since)"
        manifest = json.loads(read_text_nofollow(folder / "manifest.json"))
    except (OSError, ValueError):
        return "manifest.json is missing, a link or unreadable"
    for rel, meta in ((manifest.get("written") if isinstance(manifest, dict) else None) or {}).items():
        try:
            if not isinstance(meta, dict) or file_sha256(folder / rel, follow=False) != meta.get("sha256"):
                return f"{rel} content differs"
        except OSError:
            return f"{rel} is missing or a link"
    return None


def calibrating_eval(spec: Any, endpoint: Any) -> str | None:
    """The label of an eval with human grading whose judge is ``endpoint`` (same url and model), or None."""
    for label, block in getattr(spec, "eval", {}).items():
        judge = getattr(block, "judge", None)
        if block.human is not None and judge is not None and (judge.url, judge.model) == (endpoint.url, endpoint.model):
            return str(label)
    return None


def judge_standing(recipe_path: str | Path, spec: Any, endpoint: Any,
                   workdir: str | Path | None = None) -> tuple[bool, str]:
    """The rule for a judge used outside an eval gate (a reward, a synth filter): refused when an eval with human
    grading uses the same judge, has run, and the judge does not reach its judge_agreement there; allowed, and
    said to be uncalibrated, while no such eval exists or it has not run yet (it may evaluate the very model the
    reward trains)."""
    label = calibrating_eval(spec, endpoint)
    if label is None:
        return True, (f"the judge {endpoint.model} is not calibrated: no eval with human grading uses it (add "
                      "human = { ... } to an eval with the same judge to check it against experts)")
    ok, why = judge_trusted(recipe_path, spec, label, workdir)
    if not ok and "has not been applied" in why:
        return True, f"the judge {endpoint.model} is not calibrated yet: {why}"
    return ok, why


def judge_scores(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """(item, answer hash) -> the judge's score, from an eval's prediction rows."""
    out = {}
    for r in rows:
        score = (r.get("scores") or {}).get("judge")
        if score is not None:
            out[(str(r["id"]), answer_hash(r.get("prediction") or ""))] = float(score)
    return out


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]


def report_lines(human: dict[str, Any] | None) -> list[str]:
    """What an eval report says of its expert grades: the grading status, the experts' agreement, the judge's."""
    if not human:
        return []
    out = []
    if "status" in human:
        agree = human.get("agreement") or {}
        figures = [f"Cohen's kappa {agree['kappa']}" for _ in [0] if agree.get("kappa") is not None]
        figures += [f"Krippendorff's alpha {agree['alpha']}" for _ in [0] if agree.get("alpha") is not None]
        n = len(agree.get("graders", []))
        who = (f"{n} grader{'s' if n != 1 else ''}" if n else "no grades yet") + \
            (f" agree at {', '.join(figures)} on {agree['units']} answers graded by two or more" if figures else "")
        out.append(f"Expert grades ({human['mode']}, {human['grades_file']}): {human['status']}; {who}.")
    judge = human.get("judge")
    if judge:
        rates = ", ".join(f"{k.upper()} {judge[k]}" for k in ("tpr", "tnr") if judge.get(k) is not None)
        figures = (f"kappa {judge['kappa']}" + (f", {rates}" if rates else "") + f" on {judge['n']} answers both "
                   "graded") if judge.get("n") else "no answer graded by both yet"
        out.append(f"Judge vs experts: {figures}; {'trusted' if judge.get('trusted') else 'NOT trusted'}: "
                   f"{judge.get('reason')}.")
    return out
