"""Evaluation reports: report.md, a self-contained report.html (charts embedded), PNG charts, predictions."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from sdk.grades import report_lines
from sdk.records.eval import save_eval


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def metrics_chart(path: Path, summary: dict[str, Any]) -> bool:
    """Bars with CI error bars per metric and system; perplexity (unbounded, lower is better) in its own panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = summary["metrics"]
    systems = list(results)
    names = sorted({m for r in results.values() for m in r if m != "perplexity"})
    ppl = [sid for sid in systems if "perplexity" in results[sid]]
    if not systems or not (names or ppl):
        return False
    width = 0.8 / len(systems)
    panels = [p for p in (names, ppl) if p]
    fig, axes = plt.subplots(1, len(panels), dpi=100, squeeze=False,
                             figsize=(max(4, (max(6, 0.8 * len(names) * len(systems)) if names else 0) + (3 if ppl else 0)), 4),
                             gridspec_kw={"width_ratios": [max(1, len(names)) if p is names else 1 for p in panels]})

    def bars(ax: Any, metrics: list[str], sids: list[str]) -> None:
        for i, sid in enumerate(sids):
            xs, ys, lo, hi = [], [], [], []
            for j, m in enumerate(metrics):
                if m in results[sid]:
                    r = results[sid][m]
                    xs.append(j + i * width)
                    ys.append(r["value"])
                    lo.append(max(0.0, r["value"] - r["ci_low"]))
                    hi.append(max(0.0, r["ci_high"] - r["value"]))
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=sid, color=f"C{systems.index(sid)}")
        ax.set_xticks([j + width * (len(sids) - 1) / 2 for j in range(len(metrics))])
        ax.set_xticklabels(metrics)
        ax.grid(axis="y", alpha=0.3)

    confidence = f"{summary.get('confidence', 0.95):.0%} bootstrap CI"
    if names:
        ax = axes[0][0]
        bars(ax, names, systems)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"score ({confidence})")
        ax.legend(fontsize=8)
    if ppl:
        ax = axes[0][-1]
        bars(ax, ["perplexity"], ppl)
        ax.set_ylabel(f"perplexity, lower is better ({confidence})")
        if not names:
            ax.legend(fontsize=8)
    fig.suptitle(f"{summary['step']}: {summary['n_items']} items")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def loss_chart(path: Path, artifacts: dict[str, Any]) -> bool:
    """Training loss curves of earlier steps: every artifact with ``outputs.loss_curve`` (a list of {step, loss})."""
    curves = {}
    for step_id, art in sorted(artifacts.items()):
        name = art.outputs.get("loss_curve")
        f = art.path / name if name else None
        if f is not None and f.exists():
            try:
                data = [d for d in json.loads(f.read_text()) if "step" in d and "loss" in d]
            except (ValueError, TypeError):
                continue
            if data:
                curves[step_id] = data
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for step_id, data in curves.items():
        ax.plot([d["step"] for d in data], [d["loss"] for d in data], label=step_id)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss of earlier steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def table_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    results, comparisons = summary["metrics"], summary.get("comparisons", {})
    names = sorted({m for r in results.values() for m in r})
    head = ["system"] + names
    body = []
    for sid, r in results.items():
        row = [sid]
        for m in names:
            if m not in r:
                row.append("—")
                continue
            cell = f"{r[m]['value']:.3f} [{r[m]['ci_low']:.3f}, {r[m]['ci_high']:.3f}]"
            c = comparisons.get(sid, {}).get(m)
            if c:
                cell += f" (Δ {c['difference']:+.3f}, p={c['p_value']:.3f})"
            row.append(cell)
        body.append(row)
    return head, body


def write_predictions(path: Path, rows: dict[str, list[dict[str, Any]]]) -> None:
    flat = [r for rs in rows.values() for r in rs]
    flat.sort(key=lambda r: (r["correct"] is None, bool(r["correct"]), r["system"], r["id"]))
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in flat)


PRIMARY = ("accuracy", "exact_match", "f1")


def best_system(summary: dict[str, Any]) -> str | None:
    """The system with the highest primary metric (accuracy, else exact match, else F1)."""
    metrics = summary.get("metrics") or {}
    for name in PRIMARY:
        scored = [(cells[name]["value"], sid) for sid, cells in metrics.items()
                  if isinstance(cells.get(name), dict) and cells[name].get("value") == cells[name].get("value")]
        if scored:
            return max(scored)[1]
    return next(iter(metrics), None)


def misses(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Wrong answers of one system by cause: retrieval (the answer was not in what retrieval found), generation
    (it was, and the answer is still wrong), or unknown (no retrieval)."""
    out = {"wrong": 0, "retrieval": 0, "generation": 0}
    for r in rows:
        if r.get("correct") == 0:
            out["wrong"] += 1
            if r.get("miss") in ("retrieval", "generation"):
                out[r["miss"]] += 1
    return out


def _retrieved(r: dict[str, Any], n: int = 3) -> str:
    found = [str(s) for s in (r.get("retrieved") or [])][:n]
    return ", ".join(Path(s).name for s in found) if found else "-"


def write_report(out: Path, summary: dict[str, Any], rows: dict[str, list[dict[str, Any]]],
                 artifacts: dict[str, Any], spec: Any) -> dict[str, str]:
    """Write predictions.jsonl (wrong answers first), summary.json, PNG charts, report.md and a self-contained
    report.html into ``out``; return the manifest outputs naming them."""
    best = best_system(summary)
    best_rows = rows.get(best, []) if best else []
    counts = misses(best_rows)
    summary["misses"] = {"system": best, **counts}
    write_predictions(out / "predictions.jsonl", rows)
    save_eval(summary, out)  # the one place summary.json is written (sdk.records.eval)
    charts = []
    if metrics_chart(out / "metrics.png", summary):
        charts.append(("metrics.png", f"Metrics with {summary.get('confidence', 0.95):.0%} bootstrap confidence intervals"))
    if loss_chart(out / "loss_curves.png", artifacts):
        charts.append(("loss_curves.png", "Training loss of earlier steps"))
    head, body = table_rows(summary)
    gate = summary.get("gate")
    contam = summary.get("contamination", {})
    wrong = [r for r in best_rows if r["correct"] == 0][:20]
    md = [f"# Evaluation report: {summary['step']}", "",
          f"{summary['n_items']} items, task `{summary['task']}`, systems: {', '.join(summary['systems'])}."
          + (f" {summary['held_out_for_training']} items tagged `train` held out for training, not scored."
             if summary.get("held_out_for_training") else ""),
          (f"Each cell: mean [{summary.get('confidence', 0.95):.0%} bootstrap CI]; for systems after the first, the difference from the first and its "
          "paired-bootstrap p-value."), ""]
    md += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]
    md += [""]
    if gate:
        md += [f"**Gate** `{gate['expression']}`: {_verdict(gate)} ({gate['detail']})", ""]
    experts = report_lines(summary.get("human"))
    md += [f"**{line.split(':')[0]}**:{line.split(':', 1)[1]}" for line in experts] + ([""] if experts else [])
    overlap = contamination_text(summary, spec)
    if overlap:
        md += [f"**Contamination**: {overlap}.", ""]
        for item, share in list(contam.get("items", {}).items())[:20]:
            md.append(f"- item `{item}`: {share:.0%} of its {contam['ngram']}-grams")
        md.append("")
    md += _routing_md(rows)
    for name, title in charts:
        md += [f"## {title}", "", f"![{title}]({name})", ""]
    if wrong:
        md += [f"## Wrong answers of the best system, {best} (first 20; every system's in predictions.jsonl)", "",
               _miss_line(counts), "",
               "| id | question | gold | prediction | retrieved | miss |", "|---|---|---|---|---|---|"]
        md += [f"| {r['id']} | {r['question'][:80]} | {r['gold'][:40]} | {str(r['prediction'])[:40]} | "
               f"{_retrieved(r)} | {r.get('miss') or '-'} |" for r in wrong]
    (out / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    imgs = "".join(
        f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='data:image/png;base64,"
        f"{base64.b64encode((out / n).read_bytes()).decode()}'/>" for n, t in charts)
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>"
    gate_html = (f"<p class='{'ok' if gate['passed'] else 'bad'}'><b>Gate</b> <code>{html.escape(gate['expression'])}</code>: "
                 f"{_verdict(gate)} ({html.escape(gate['detail'])})</p>") if gate else ""
    gate_html += "".join(f"<p class='experts'>{html.escape(line)}</p>" for line in experts)
    wrong_html = "".join(f"<tr><td>{html.escape(r['id'])}</td><td>{html.escape(r['question'][:120])}</td>"
                         f"<td>{html.escape(r['gold'])}</td><td>{html.escape(str(r['prediction'])[:80])}</td>"
                         f"<td>{html.escape(_retrieved(r))}</td><td>{html.escape(r.get('miss') or '-')}</td></tr>"
                         for r in wrong)
    overlap_html = f"<p>Contamination: {html.escape(overlap)}.</p>" if overlap else ""
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(summary['step'])} report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}th{{background:#f3f3f3}}.ok{{color:#070}}.bad{{color:#b00}}
img{{max-width:100%}}</style></head><body>
<h1>Evaluation report: {html.escape(summary['step'])}</h1>
<p>{summary['n_items']} items, task <code>{summary['task']}</code>. Cells: mean [{summary.get('confidence', 0.95):.0%} bootstrap CI]; Δ and p against the first system.</p>
{table}{gate_html}
{overlap_html}
{imgs}
{_routing_html(rows)}
<h2>Wrong answers of the best system, {html.escape(str(best))}</h2><p>{html.escape(_miss_line(counts))}</p>
<table><tr><th>id</th><th>question</th><th>gold</th><th>prediction</th><th>retrieved</th><th>miss</th></tr>{wrong_html}</table>
</body></html>"""
    (out / "report.html").write_text(page, encoding="utf-8")
    outputs = {"report": "report.md", "html": "report.html", "predictions": "predictions.jsonl", "summary": "summary.json"}
    outputs.update({n.split(".")[0] + "_chart": n for n, _ in charts})
    return outputs


def _verdict(gate: dict[str, Any]) -> str:
    return "PENDING" if gate.get("pending") else "passed" if gate["passed"] else "FAILED"


def contamination_text(summary: dict[str, Any], spec: Any = None) -> str | None:
    """What the eval items share with the text the evaluated systems saw, naming it as what it is: training data
    (datasets, pre-training corpora) or a retrieval corpus (where a rag system is meant to find the answers, so an
    overlap there is no contamination). None when nothing was checked."""
    contam = summary.get("contamination") or {}
    if not contam.get("checked"):
        return None
    steps = list(contam.get("steps") or [])
    pretrained = {str(b.corpus) for b in getattr(spec, "pretrain", {}).values()} if spec is not None else set()
    trained = [s for s in steps if not s.startswith("corpus.") or s in pretrained or spec is None]
    retrieved = [s for s in steps if s not in trained]
    shared = f"{contam['contaminated']} of {summary['n_items']} items share {contam['ngram']}-grams with"
    if trained:
        where = f"the training data ({', '.join(trained)})"
        return f"{shared} {where}" + (f" or the retrieval corpus ({', '.join(retrieved)})" if retrieved else "")
    if retrieved:
        return (f"no evaluated system was trained on this recipe's data; {shared} the retrieval corpus "
                f"({', '.join(retrieved)}), where their answers are meant to be found")
    return None


def _miss_line(counts: dict[str, int]) -> str:
    return (f"{counts['wrong']} wrong: {counts['retrieval']} retrieval misses (the answer was not in the retrieved "
            f"chunks), {counts['generation']} generation misses (it was, and the answer is still wrong)"
            + (f", {counts['wrong'] - counts['retrieval'] - counts['generation']} without retrieval"
               if counts['wrong'] > counts['retrieval'] + counts['generation'] else "") + ".")


def _routed(rows: dict[str, list[dict[str, Any]]]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [(sid, rs) for sid, rs in rows.items() if rs and all(r.get("routing") for r in rs)]


def _routing_md(rows: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Each item's routing decision, for every router among the systems."""
    md: list[str] = []
    for sid, rs in _routed(rows):
        md += [f"## Routing of {sid}: where each question went", "",
               "| id | question | routed to | p | correct |", "|---|---|---|---|---|"]
        md += [f"| {r['id']} | {r['question'][:80]} | {r['routing']['system']} ({r['routing']['target']}) | "
               f"{r['routing']['probability']:.3f} | {'-' if r['correct'] is None else int(bool(r['correct']))} |"
               for r in rs]
        md.append("")
    return md


def _routing_html(rows: dict[str, list[dict[str, Any]]]) -> str:
    out = ""
    for sid, rs in _routed(rows):
        body = "".join(f"<tr><td>{html.escape(r['id'])}</td><td>{html.escape(r['question'][:120])}</td>"
                       f"<td>{html.escape(str(r['routing']['system']))} ({html.escape(str(r['routing']['target']))})"
                       f"</td><td>{r['routing']['probability']:.3f}</td>"
                       f"<td>{'-' if r['correct'] is None else int(bool(r['correct']))}</td></tr>" for r in rs)
        out += (f"<h2>Routing of {html.escape(sid)}: where each question went</h2><table><tr><th>id</th>"
                f"<th>question</th><th>routed to</th><th>p</th><th>correct</th></tr>{body}</table>")
    return out
