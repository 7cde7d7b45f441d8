"""Review decisions through a file, for experts who work offline: :func:`export_rows` writes a synth step's
candidates with their current decision as JSONL or CSV (by the file's extension); the expert fills ``decision``
(accept, reject, edit or blank), ``reason`` and the ``edited_*`` columns; :func:`read_import` checks every line
first (a bad one is a ``FILE:LINE`` error, and nothing is written) and returns the decisions of the rows that
changed, which the caller appends with :func:`sdk.reviews.append`.

Columns: ``id``, ``status`` (pending, accepted, rejected, edited: shown, not read), ``decision``, ``reason``,
``reviewer``, then each text field of the rows (``question``, ``answer``; ``chosen``, ``rejected`` for preference
rows) followed by its ``edited_<field>``, then ``source`` and ``chunk``. Only ``decision``, ``reason``,
``reviewer`` and the ``edited_*`` columns are read; a generated text that was changed in place (rather than in its
``edited_`` column) is refused at its line. In CSV a cell that starts with ``= + - @`` is written with a leading
``'`` so that a spreadsheet does not run it as a formula, and read back without it. Every exported cell is
stripped of terminal control and escape sequences (a generated text may carry them; the file may be read with
``cat``), and the generated texts are compared without them on import."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator, Optional

from sdk import reviews as RV
from sdk.cleantext import terminal
from sdk.errors import DataError, DslError
from sdk.records.state import Status

HEAD = ("id", "status", "decision", "reason", "reviewer")
TAIL = ("source", "chunk")
FORMULA = ("=", "+", "-", "@", "\t", "\r")


def file_format(path: "str | Path") -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise DslError(f"{path}: the file's extension says its format: .jsonl or .csv (got {suffix or 'none'!r})")
    return suffix[1:]


def text_fields(rows: list[dict[str, Any]]) -> list[str]:
    """The editable text fields the rows have, in :data:`sdk.reviews.EDITABLE` order."""
    return [f for f in RV.EDITABLE if any(isinstance(r.get(f), str) for r in rows)]


def columns(rows: list[dict[str, Any]]) -> list[str]:
    cols = list(HEAD)
    for f in text_fields(rows):
        cols += [f, f"edited_{f}"]
    return cols + list(TAIL)


def records(rows: list[dict[str, Any]], decisions: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """One flat record per row: the generated text, the current decision and the edited text."""
    cols = columns(rows)
    out = []
    for row in rows:
        d = decisions.get(row["id"]) or {}
        edits = d.get("fields") or {}
        rec = {"id": row["id"], "status": RV.status(d or None), "decision": d.get("decision", ""),
               "reason": d.get("reason", ""), "reviewer": d.get("reviewer", "")}
        for f in text_fields(rows):
            rec[f] = _text(row.get(f))
            rec[f"edited_{f}"] = edits.get(f, "")
        rec["source"], rec["chunk"] = _text(row.get("source")), _text(row.get("chunk"))
        out.append({c: terminal(rec.get(c, "")) for c in cols})  # read in a terminal too: no escape sequences
    return out


def _text(v: Any) -> str:
    return v if isinstance(v, str) else "" if v is None else json.dumps(v, ensure_ascii=False)


def export_rows(path: "str | Path", rows: list[dict[str, Any]], decisions: dict[str, dict[str, Any]]) -> int:
    """Write the rows and their decisions to ``path`` (.jsonl or .csv, atomically); returns how many."""
    from sdk.state import write_atomic

    fmt = file_format(path)
    recs = records(rows, decisions)
    if fmt == "jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns(rows), lineterminator="\n")
        writer.writeheader()
        for r in recs:
            writer.writerow({k: ("'" + v if v.startswith(FORMULA) else v) for k, v in r.items()})
        text = buf.getvalue()
    write_atomic(Path(path), text)
    return len(recs)


def _csv_lines(path: Path, shown: str) -> Iterator[str]:
    """The file's lines (endings kept, a BOM dropped), read one at a time: a line over the JSONL line limit
    (:func:`sdk.jsonl.max_line_bytes`) is a located error before it is held whole, so one huge line never fills
    memory."""
    from sdk.jsonl import LIMIT_HINT, max_line_bytes

    cap = max_line_bytes()
    with open(path, "rb") as f:
        offset, n = 0, 0
        while True:
            raw = f.readline(cap + 1) if cap else f.readline()
            if not raw:
                return
            n += 1
            if cap and len(raw) > cap and not (len(raw) == cap + 1 and raw.endswith(b"\n")):
                raise DataError(shown, n, f"the line is longer than the limit of {cap:,} bytes", LIMIT_HINT)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(shown, None, f"not UTF-8 text ({e.reason} at byte {offset + e.start})") from None
            yield text.removeprefix("\ufeff") if offset == 0 else text
            offset += len(raw)


def _csv_records(path: Path, shown: str) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.reader(_csv_lines(path, shown))
    try:
        header = next(reader, None)
        if not header:
            return
        for i, name in enumerate(header):
            if header.index(name) != i:
                raise DataError(shown, 1, f"column {name!r} appears twice")
        start = reader.line_num + 1
        for cells in reader:
            if any(c.strip() for c in cells):
                if len(cells) != len(header):
                    raise DataError(shown, start, f"{len(cells)} cells, the header has {len(header)}")
                yield start, {k: (v[1:] if v.startswith("'") and v[1:].startswith(FORMULA) else v)
                              for k, v in zip(header, cells)}
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(shown, reader.line_num, f"malformed CSV: {e}") from None


def read_records(path: "str | Path", shown: Optional[str] = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line, record) for every record of an exported-and-filled file."""
    from sdk.jsonl import read_jsonl

    path = Path(path)
    shown = shown or str(path)
    fmt = file_format(path)
    if not path.is_file():
        raise DslError(f"{shown}: no such file")
    if fmt == "csv":
        yield from _csv_records(path, shown)
    else:
        yield from read_jsonl(path, shown)


def _same(a: str, b: str) -> bool:
    return a.replace("\r\n", "\n").strip() == b.replace("\r\n", "\n").strip()


def read_import(path: "str | Path", rows: list[dict[str, Any]], decisions: dict[str, dict[str, Any]],
                reviewer: Optional[str] = None, shown: Optional[str] = None,
                at: Optional[str] = None) -> dict[str, Any]:
    """Check every record of a filled file against the rows and the current decisions; returns ``{"rows": N,
    "entries": [new decisions], "by_decision": {...}, "unchanged": n}``. Raises a located DataError at the first bad
    record (nothing is appended by this function)."""
    shown = shown or str(path)
    by_id = {r["id"]: r for r in rows}
    fields = text_fields(rows)
    known = set(columns(rows)) | {f"edited_{f}" for f in RV.EDITABLE} | set(RV.EDITABLE)
    at = at or RV.now()
    seen: dict[str, int] = {}
    entries: list[dict[str, Any]] = []
    n_rows = 0
    for line, rec in read_records(path, shown):
        n_rows += 1
        stray = sorted(set(rec) - known)
        if stray:
            raise DataError(shown, line, f"unknown column {', '.join(map(repr, stray))} (the export's columns: "
                            f"{', '.join(columns(rows))})")
        for k, v in rec.items():
            if not isinstance(v, str):
                raise DataError(shown, line, f"{k} must be a string, found {type(v).__name__}")
        rid = rec.get("id", "")
        if rid not in by_id:
            raise DataError(shown, line, f"no candidate row has id {rid!r}" if rid else "the record has no id",
                            "export the rows again: dsl review export RECIPE LABEL -o FILE")
        if rid in seen:
            raise DataError(shown, line, f"row {rid} appears twice (first at line {seen[rid]})")
        seen[rid] = line
        entry = _decide(rec, by_id[rid], fields, shown, line)
        if entry is None:
            continue
        entry["reason"] = rec.get("reason", "").strip()
        current = decisions.get(rid)
        if current and _unchanged(current, entry):
            continue
        who = reviewer or rec.get("reviewer", "").strip()
        if not who:
            raise DataError(shown, line, "a changed decision needs a reviewer: fill the reviewer column, or pass "
                            "--reviewer NAME")
        entries.append(RV.check({"id": rid, **entry, "reviewer": who, "at": at}, shown, line))
    if not n_rows:
        raise DataError(shown, None, "no rows: export them with dsl review export RECIPE LABEL -o FILE")
    by: dict[str, int] = {}
    for e in entries:
        by[e["decision"]] = by.get(e["decision"], 0) + 1
    return {"rows": n_rows, "entries": entries, "by_decision": by, "unchanged": n_rows - len(entries)}


def _unchanged(current: dict[str, Any], entry: dict[str, Any]) -> bool:
    a, b = current.get("fields") or {}, entry.get("fields") or {}
    return (current["decision"] == entry["decision"] and _same(current.get("reason", ""), entry["reason"])
            and set(a) == set(b) and all(_same(a[k], b[k]) for k in a))


def _decide(rec: dict[str, str], row: dict[str, Any], fields: list[str], shown: str,
            line: int) -> Optional[dict[str, Any]]:
    """The decision a record asks for ({decision, fields?}), or None for none."""
    for f in fields:
        if f in rec and isinstance(row.get(f), str) and not _same(rec[f], terminal(row[f])):
            raise DataError(shown, line, f"{f} differs from the generated row: put the new text in edited_{f} "
                            f"(the {f} column is not read)")
    edits = {}
    for f in RV.EDITABLE:
        value = rec.get(f"edited_{f}", "")
        if value.strip() and not _same(value, terminal(_text(row.get(f)))):
            if f not in fields:
                raise DataError(shown, line, f"edited_{f}: these rows have no {f}")
            edits[f] = value.replace("\r\n", "\n").strip()
    decision = rec.get("decision", "").strip().lower()
    if decision not in ("",) + RV.DECISIONS:
        raise DataError(shown, line, f"decision {rec.get('decision')!r} is not accept, reject, edit or blank")
    if decision == "accept" and edits:
        raise DataError(shown, line, f"decision accept, but edited_{next(iter(edits))} holds new text: set the "
                        "decision to edit, or clear the edited_ cells to accept the row as generated")
    if decision == "edit" and not edits:
        raise DataError(shown, line, "decision edit, but no edited_ cell holds text that differs from the row")
    if decision == "reject":
        return {"decision": "reject"}
    if edits:
        return {"decision": "edit", "fields": edits}
    return {"decision": "accept"} if decision == "accept" else None


# ------------------------------------------------------------------------------------- a recipe's synth steps


def synth_steps(ws: Any) -> list[dict[str, Any]]:
    """The recipe's synth steps (and any synth step the state still records): label, step id, review policy,
    whether it is applied, and its decisions file."""
    blocks = dict(getattr(ws.spec, "synth", None) or {})
    labels = list(blocks) + sorted(s.split(".", 1)[1] for s in ws.state.steps
                                   if s.startswith("synth.") and s.split(".", 1)[1] not in blocks)
    out = []
    for label in labels:
        entry = ws.state.steps.get(f"synth.{label}") or {}
        block = blocks.get(label)
        out.append({"label": label, "id": f"synth.{label}", "in_recipe": block is not None,
                    "policy": str(getattr(block, "review", None) or "none"),
                    "task": str(getattr(block, "task", "") or ""),
                    "applied": entry.get("status") in Status.finished(),
                    "decisions": decisions_file(ws, label)})
    return out


def synth_label(ws: Any, given: str) -> str:
    """The label of a synth step given as ``synth.LABEL`` or ``LABEL``; a DslError naming the ones there are."""
    label = given.removeprefix("synth.")
    labels = [s["label"] for s in synth_steps(ws)]
    if label not in labels:
        where = getattr(ws.recipe, "path", "the recipe")
        raise DslError(f"no synth step {label!r} in {where} (have: {', '.join(labels) or 'none'})")
    return label


def decisions_file(ws: Any, label: str) -> Path:
    return RV.decisions_path(ws.spec.base_dir, ws.spec.name, label)


def candidates(ws: Any, label: str) -> list[dict[str, Any]]:
    """The candidate rows of the applied ``synth.LABEL`` (its artifact's candidates.jsonl)."""
    art = ws.artifact(f"synth.{label}")
    return RV.read_candidates(Path(art.path) / "candidates.jsonl")
