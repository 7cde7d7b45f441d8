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


def env(name: str) -> S.SecretRef:
    return S.SecretRef(name)


def file(path: str) -> S.FileRef:
    return S.FileRef(path)


def ref(text: str) -> S.Ref:
    kind, _, label = text.partition(".")
    return S.Ref(kind, label)


class Domain:
    def __init__(self, name: str, description: Optional[str] = None, base_dir: Union[str, Path, None] = None) -> None:
        self._data: dict[str, Any] = {"name": name}
        if description is not None:
            self._data["description"] = description
        self._base_dir = Path(base_dir) if base_dir is not None else Path.cwd()

    def _add(self, kind: str, label: Optional[str], attrs: dict[str, Any]) -> "Domain":
        label = label or S.DEFAULT_LABEL
        group = self._data.setdefault(kind, {})
        if label in group:
            raise ValueError(f"duplicate block {kind}.{label}")
        group[label] = attrs
        return self

    def base_model(self, label: str, **attrs: Any) -> "Domain":
        return self._add("base_model", label, attrs)

    def corpus(self, label: str, **attrs: Any) -> "Domain":
        return self._add("corpus", label, attrs)

    def dataset(self, label: str, **attrs: Any) -> "Domain":
        return self._add("dataset", label, attrs)

    def pretrain(self, label: str, **attrs: Any) -> "Domain":
        return self._add("pretrain", label, attrs)

    def finetune(self, label: str, **attrs: Any) -> "Domain":
        return self._add("finetune", label, attrs)

    def rag(self, label: str, **attrs: Any) -> "Domain":
        return self._add("rag", label, attrs)

    def eval(self, label: str, **attrs: Any) -> "Domain":
        return self._add("eval", label, attrs)

    def route(self, label: Optional[str] = None, **attrs: Any) -> "Domain":
        return self._add("route", label, attrs)

    def serve(self, label: Optional[str] = None, **attrs: Any) -> "Domain":
        return self._add("serve", label, attrs)

    def compute(self, label: Optional[str] = None, **attrs: Any) -> "Domain":
        return self._add("compute", label, attrs)

    def build(self, check_files: bool = True) -> S.Spec:
        """Validate and return the Spec; errors raise SpecError with every problem listed."""
        from dsl.parser import validate

        return validate(self._data, {}, {}, self._base_dir.resolve(), check_files)
