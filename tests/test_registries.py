"""Each kind, engine, retriever and metric is declared once; the names the spec accepts and the registries that
implement them cannot drift apart."""

from __future__ import annotations

import typing

import pytest

from sdk import spec as S


def _literal(model: type, field: str) -> set[str]:
    return set(typing.get_args(model.model_fields[field].annotation))


def test_serving_engines_match_the_serve_blocks_choices() -> None:
    from sdk.backends.serve.engines import ENGINES, Engine, register

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
        register_kind(Kind(name="rag", block=type("Other", (S.Block,), {}), backend="haystack"))
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


def test_a_step_kind_without_a_backend_is_refused_when_declared() -> None:
    """The test backend is no fallback: a step kind must name the backend that runs it (a setting names none)."""
    from sdk.spec import kinds

    with pytest.raises(ValueError, match="'unrunnable' is a step but names no backend"):
        kinds.declare("unrunnable")(type("Unrunnable", (S.Block,), {}))
    assert "unrunnable" not in kinds.kind_names() and "unrunnable" not in S.Spec.model_fields
    with pytest.raises(ValueError, match="is a setting, not a step"):
        kinds.Kind(name="knob", block=S.Block, role="setting", backend="test")
    assert all(k.backend for k in kinds.all_kinds() if k.is_step)


def test_the_test_backend_runs_a_step_only_when_asked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import sdk
    from dsl.parser import load
    from tests._specs import write_small

    spec = load(write_small(tmp_path))
    steps = sdk.plan(spec, check=False).steps
    assert steps and all(s.backend == S.kinds.get_kind(s.kind).backend != "test" for s in steps)
    assert {s.backend for s in sdk.plan(spec, backend="test", check=False).steps} == {"test"}
