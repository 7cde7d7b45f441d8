"""Generate the attribute reference of docs/language.md from the spec (so the docs cannot drift).

    python -m dsl.docgen            # print the reference
    python -m dsl.docgen --write    # rewrite the part of docs/language.md between the markers
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from sdk import spec as S

BEGIN, END = "<!-- reference:begin -->", "<!-- reference:end -->"
NESTED = [S.Llama, S.Split, S.Lora, S.Memory, S.IndexStore, S.PgVector, S.Endpoint, S.FieldMap, S.SGLangOptions, S.DeepSpeed, S.Fsdp]


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        inner = args[0]
        if inner is S.Ref:
            for meta in args[1:]:
                schema = getattr(meta, "json_schema", None)
                if schema and "x-kinds" in schema:
                    names: list[str] = []
                    for k in schema["x-kinds"]:  # a role (@model, @system) stands for every kind that has it
                        names += S.kinds_with_role(k[1:]) if k.startswith("@") else [k]
                    return "reference to " + " \\| ".join(dict.fromkeys(names))
            return "reference"
        if inner is S.SecretRef:
            return 'env("NAME")'
        if typing.get_origin(inner) is typing.Union and S.FileRef in typing.get_args(inner):
            return 'string or file("PATH")'
        if inner is Any:
            return "expression"
        return type_name(inner)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in args)
    if origin is typing.Union or isinstance(tp, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(parts)
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"object of {type_name(args[1])}"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        tag = tp.model_fields.get("type")
        return f"`{tag.default} {{ ... }}`" if tag is not None else f"{{ ... }} ({tp.__name__})"
    return getattr(tp, "__name__", str(tp))


def default_of(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "defaults"
        return f"`{value}`" if value not in ({}, []) else "empty"
    if field.default is None or field.default is PydanticUndefined:
        return "—"
    if isinstance(field.default, bool):
        return f"`{str(field.default).lower()}`"
    return f"`{field.default}`"


def table(model: type[BaseModel]) -> list[str]:
    rows = ["| attribute | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name == "type":
            continue
        desc = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{field.alias or name}` | {type_name(field.rebuild_annotation() if field.metadata else field.annotation)} | {default_of(field)} | {desc} |")
    return rows


def reference() -> str:
    out: list[str] = ["## Block reference", ""]
    for kind, model in S.BLOCK_TYPES.items():
        label = "" if kind in S.UNLABELLED else " LABEL"
        out += [f"### `{kind}{label} {{ ... }}`", "", (model.__doc__ or "").strip(), ""] + table(model) + [""]
    out += ["## Objects used inside blocks", ""]
    for model in NESTED:
        tag = model.model_fields.get("type")
        title = f"`{tag.default} {{ ... }}`" if tag is not None else f"{model.__name__} `{{ ... }}`"
        out += [f"### {title}", "", (model.__doc__ or "").strip(), ""] + table(model) + [""]
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    text = reference()
    if "--write" in sys.argv:
        doc = Path(__file__).resolve().parents[1] / "docs" / "language.md"
        current = doc.read_text()
        head, _, rest = current.partition(BEGIN)
        _, _, tail = rest.partition(END)
        doc.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
