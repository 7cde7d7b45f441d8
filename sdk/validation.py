"""Validating collected attributes into a Spec, for callers without source text (the Python builder, JSON):
pydantic's errors and the cross-block problems become diagnostics that name the attribute's path
(``finetune.sip.lora.rank``). The DSL maps the same errors to file:line:col itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdk.errors import Diagnostic, SpecError


def _path(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and ("[" in p or "function" in p)))


def validate(data: dict[str, Any], base_dir: Path, check_files: bool = True) -> Any:
    from pydantic import ValidationError

    from sdk.spec import Spec

    try:
        return Spec.model_validate(data, context={"base_dir": Path(base_dir).resolve(), "check_files": check_files})
    except ValidationError as e:
        diags: list[Diagnostic] = []
        for err in e.errors(include_input=False):
            if err["type"] == "spec_semantic":
                diags += [Diagnostic(f"{_path(tuple(p.path))}: {p.message}", None, p.hint)
                          for p in err["ctx"]["problems"]]
            else:
                diags.append(Diagnostic(f"{_path(tuple(err['loc']))}: {err['msg']}"))
        unique = list(dict.fromkeys(diags))
        raise SpecError(f"{len(unique)} error(s) in the spec", unique) from None
