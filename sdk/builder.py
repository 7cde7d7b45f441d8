"""A fluent Python builder that produces the same validated Spec as a recipe file.

    spec = (Domain("telecom", base_dir="recipes")
            .base_model("tiny", architecture=llama(layers=2, hidden=64))
            .corpus("specs", paths=["data/*.txt"])
            .pretrain("base", from_="base_model.tiny", corpus="corpus.specs")
            .build())

It holds no logic of its own: ``build()`` is ``Spec.model_validate`` on the collected attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Union

from sdk import spec as S

llama = S.Llama
endpoint = S.Endpoint
pgvector = S.PgVector
memory = S.Memory
index = S.IndexStore


def env(name: str) -> S.SecretRef:
    return S.SecretRef(name)


def file(path: str) -> S.FileRef:
    return S.FileRef(path)


def ref(text: str) -> S.Ref:
    kind, _, label = text.partition(".")
    return S.Ref(kind, label)


class Domain:
    def __init__(self, name: str, description: Optional[str] = None, base_dir: Union[str, Path, None] = None,
                 tracking: Optional[str] = None) -> None:
        self._data: dict[str, Any] = {"name": name}
        if description is not None:
            self._data["description"] = description
        if tracking is not None:  # local | off | a tracking URI (sdk.tracking)
            self._data["tracking"] = tracking
        self._base_dir = Path(base_dir) if base_dir is not None else Path.cwd()

    def __getattr__(self, kind: str) -> Any:
        """One method per declared block kind (``.finetune("sip", ...)``, ``.route(...)``), plugins' kinds too:
        labelled kinds take a label first, unlabelled ones only attributes."""
        from sdk.spec import kinds

        if kind.startswith("_") or kind not in kinds.kind_names():
            raise AttributeError(kind)
        decl = kinds.get_kind(kind)

        def add(*args: Any, **attrs: Any) -> "Domain":
            if decl.labelled:
                if len(args) != 1 or not isinstance(args[0], str):
                    raise TypeError(f"{kind}() takes its label first: .{kind}(\"LABEL\", ...)")
                return self._add(kind, args[0], attrs)
            if args:
                raise TypeError(f"{kind} blocks take no label: .{kind}(...attributes...)")
            return self._add(kind, None, attrs)

        add.__name__ = kind
        add.__doc__ = decl.doc
        return add

    def _add(self, kind: str, label: Optional[str], attrs: dict[str, Any]) -> "Domain":
        label = label or S.DEFAULT_LABEL
        group = self._data.setdefault(kind, {})
        if label in group:
            raise ValueError(f"duplicate block {kind}.{label}")
        group[label] = attrs
        return self

    def build(self, check_files: bool = True) -> S.Spec:
        """Validate and return the Spec; errors raise SpecError with every problem listed."""
        from sdk.validation import validate

        return validate(self._data, self._base_dir, check_files)
