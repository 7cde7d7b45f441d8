"""Each kind, engine, retriever and metric is declared once; the names the spec accepts and the registries that
implement them cannot drift apart."""

from __future__ import annotations

import typing

import pytest

from sdk import spec as S


def _literal(model: type, field: str) -> set[str]:
    return set(typing.get_args(model.model_fields[field].annotation))


def test_serving_engines_match_the_serve_blocks_choices() -> None:
    from sdk.backends.engines import ENGINES, Engine, register

    assert set(ENGINES) == _literal(S.ServeBlock, "engine")
    with pytest.raises(ValueError, match="already registered"):
        register(type("Again", (Engine,), {"name": "local"}))


def test_every_step_kind_has_a_default_backend_in_the_registry() -> None:
    from sdk.backends.base import Registry
    from sdk.spec import kinds

    registry = Registry()
    for kind in kinds.all_kinds():
        if kind.is_step:
            assert kind.backend in registry.names(), kind.name
            assert kind.name in registry.get(kind.backend).kinds


def test_a_second_kind_of_the_same_name_is_refused() -> None:
    from sdk.spec.kinds import Kind, register_kind

    with pytest.raises(ValueError, match="already registered"):
        register_kind(Kind(name="rag", block=type("Other", (S.Block,), {})))
    with pytest.raises(ValueError, match="role"):
        Kind(name="x", block=S.Block, role="wizard")


def test_a_cycle_is_found_by_graphlib_and_named_in_dependency_order() -> None:
    from sdk.graph import CycleError, Graph

    g = Graph()
    g.add("a", ["b"])
    g.add("b", ["c"])
    g.add("c", ["a"])
    g.add("d")
    with pytest.raises(CycleError, match=r"^cycle: a -> b -> c -> a$"):
        g.order()
    ok = Graph()
    ok.add("x", ["y"])
    ok.add("y")
    ok.add("z", ["x"])
    assert ok.order() == ["y", "x", "z"]  # dependencies first, ties in insertion order
