"""The whole domain: ``Spec``, one field per declared block kind, and the cross-block checks.

The class is made from the kind registry (``pydantic.create_model``), so a kind declared by a plugin is a field
like the built-in ones. Cross-block checks (references, cycles, and each kind's own ``check``) are collected, all
of them, into one error whose context lists each problem with its path, so the DSL can point at each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import Field, PrivateAttr, ValidationInfo, create_model, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sdk.spec import kinds as K
from sdk.spec.paths import file_ref_problems
from sdk.spec.templates import template_problems
from sdk.spec.values import MAX_INT, Block, Label, Problem, Ref, parse_ref, refs_in, suggest
from sdk.spec.weights import weight_problems


class SpecBase(Block):
    """A whole domain: every block, keyed by kind and then label."""

    name: Label = Field(description="Domain name (the label of the domain block)")
    description: Optional[str] = Field(default=None, description="What the domain covers")
    roots: list[str] = Field(default_factory=list, description="Folders outside the recipe's folder that corpus, "
                             "dataset, eval and route paths may read (relative to the recipe, or absolute)")
    max_file_mb: float = Field(default=4096, gt=0, description="Largest input file read, in MiB")
    max_line_bytes: Optional[int] = Field(default=None, ge=0, le=MAX_INT, description="Longest JSONL line read "
                                          "(a dataset row, an eval item, a route example), in bytes; default 8 MiB "
                                          "(DSL_MAX_LINE_BYTES), 0 for no limit")
    max_item_chars: Optional[int] = Field(default=None, ge=0, le=MAX_INT, description="Longest question, answer, "
                                          "choice or context of an eval item, in characters; default 262144 "
                                          "(DSL_MAX_ITEM_CHARS), 0 for no limit")
    tracking: Optional[str] = Field(default=None, description="Where each apply is tracked in MLflow: `local` "
                                    "(the default: the workdir's own store), `off`, or a tracking URI (http, https, "
                                    "sqlite, postgresql, mysql)")

    @field_validator("tracking")
    @classmethod
    def _tracking_uri(cls, v: Optional[str]) -> Optional[str]:
        return check_tracking(v)

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths in the spec are relative to (the recipe's folder)."""
        return self._base_dir

    def with_base_dir(self, base_dir: "str | Path") -> Any:
        self._base_dir = Path(base_dir).resolve()
        return self

    def blocks(self) -> list[tuple[str, str, Block]]:
        return [(k, label, block) for k in K.kind_names() for label, block in getattr(self, k).items()]

    def get(self, ref: "Ref | str") -> Block:
        ref = parse_ref(ref) if isinstance(ref, str) else ref
        return getattr(self, ref.kind)[ref.label]

    def has(self, ref: Ref) -> bool:
        return ref.kind in K.kind_names() and ref.label in getattr(self, ref.kind)

    def resolve_path(self, rel: str) -> Path:
        return (self.base_dir / rel).resolve()

    def produced_metrics(self) -> dict[str, set[str]]:
        """system id -> metric names that some eval block computes for it."""
        out: dict[str, set[str]] = {}
        for ev in getattr(self, "eval", {}).values():
            for s in ev.systems:
                if isinstance(s, Ref):
                    out.setdefault(str(s), set()).update(ev.metrics)
        return out

    @model_validator(mode="after")
    def _check_all(self, info: ValidationInfo) -> Any:
        context = info.context or {}
        base_dir = context.get("base_dir")
        if base_dir is not None:
            self._base_dir = Path(base_dir).resolve()
        problems = self._check(check_files=bool(context.get("check_files", base_dir is not None)))
        if problems:
            raise PydanticCustomError(
                "spec_semantic",
                "{count} problem(s) in the spec: {first}",
                {"count": len(problems), "first": problems[0].message, "problems": problems},
            )
        return self

    def _check(self, check_files: bool = True) -> list[Problem]:
        problems: list[Problem] = []
        add = lambda path, msg, hint=None: problems.append(Problem(path=path, message=msg, hint=hint))  # noqa: E731

        for kind in K.unlabelled():
            blocks = getattr(self, kind)
            if len(blocks) > 1:
                extra = sorted(blocks)[1:]
                add((kind, extra[0]), f"only one {kind} block is allowed per domain (found {len(blocks)})")

        for kind, label, block in self.blocks():
            for path, ref in refs_in(block, (kind, label)):
                if not self.has(ref):
                    labels = list(getattr(self, ref.kind, {}) or {})
                    hint = suggest(ref.label, labels)
                    hint = f"did you mean {ref.kind}.{hint[14:-2]}?" if hint else (
                        f"defined {ref.kind} blocks: {', '.join(labels)}" if labels else f"there is no {ref.kind} block"
                    )
                    add(path, f"reference {ref} does not match any block", hint)

        # cycles: a step that needs itself, reported at each reference that closes one
        steps = set(K.step_kinds())
        edges = {f"{kind}.{label}": [(path, str(ref)) for path, ref in refs_in(block, (kind, label))
                                     if ref.kind in steps and self.has(ref)]
                 for kind, label, block in self.blocks()}
        for node, out in edges.items():
            for path, target in out:
                trail = _path_between(edges, target, node)
                if trail is not None:
                    add(path, f"cyclic reference: {' -> '.join([node, *trail])}")

        for kind, label, block in self.blocks():
            decl = K.get_kind(kind)
            if decl.check is not None:
                problems += decl.check(self, label, block, check_files)
            for path, message in file_ref_problems(self, kind, label, block, check_files):
                add(path, message, "file() paths must stay inside the folder of the recipe"
                    if "escapes" in message else None)
            for path, message in template_problems(self, kind, label, block, check_files):
                add(path, message, "a template may only use its variables (no _attributes), with bounded loops"
                    if " is refused: " in message else None)
        problems += weight_problems(self, {tuple(p.path) for p in problems})
        return problems


TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql")


def check_tracking(v: Optional[str]) -> Optional[str]:
    """``tracking``: ``local``, ``off`` or a tracking URI of a known scheme, without credentials in it."""
    from urllib.parse import urlsplit

    if v is None or v in ("local", "off"):
        return v
    parts = urlsplit(v) if v.isprintable() and " " not in v else None
    scheme = (parts.scheme.split("+")[0] if parts else "").lower()
    if parts is None or scheme not in TRACKING_SCHEMES or (scheme.startswith("http") and not parts.hostname):
        schemes = ", ".join(s + "://..." for s in TRACKING_SCHEMES[:3])
        raise PydanticCustomError("tracking", "tracking must be local, off or a tracking URI ({schemes}), got {value}",
                                  {"schemes": schemes, "value": repr(v)[:80]})
    if parts.password is not None:
        raise PydanticCustomError("tracking", "the tracking URI holds a password; give it in the environment "
                                  "(MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD) instead", {})
    return v


def _path_between(edges: dict[str, list[tuple[Any, str]]], start: str, goal: str) -> Optional[list[str]]:
    """The shortest chain of references from ``start`` to ``goal`` (both included), or None."""
    parents: dict[str, Optional[str]] = {start: None}
    queue = [start]
    while queue:
        node = queue.pop(0)
        if node == goal:
            trail = [node]
            while parents[trail[-1]] is not None:
                trail.append(parents[trail[-1]])  # type: ignore[arg-type]
            return trail[::-1]
        for _, nxt in edges.get(node, []):
            if nxt not in parents:
                parents[nxt] = node
                queue.append(nxt)
    return None


def build_spec_class() -> type:
    """``Spec``: SpecBase plus one ``dict[label, Block]`` field per registered kind, in declaration order."""
    fields: dict[str, Any] = {
        k.name: (dict[Label, k.block], Field(default_factory=dict, description=k.doc.split("\n")[0]))  # type: ignore[name-defined]
        for k in K.all_kinds()
    }
    return create_model("Spec", __base__=SpecBase, __module__="sdk.spec", **fields)
