"""A small DAG: add nodes and edges, topological order, a cycle error that names the cycle (found by the standard
library's ``graphlib``)."""

from __future__ import annotations

import graphlib
from typing import Iterable


class CycleError(ValueError):
    def __init__(self, cycle: list[str]) -> None:
        super().__init__("cycle: " + " -> ".join(cycle))
        self.cycle = cycle


class Graph:
    def __init__(self) -> None:
        self.deps: dict[str, list[str]] = {}

    def add(self, node: str, depends_on: Iterable[str] = ()) -> None:
        self.deps.setdefault(node, [])
        for d in depends_on:
            if d not in self.deps[node]:
                self.deps[node].append(d)
            self.deps.setdefault(d, [])

    def order(self) -> list[str]:
        """Dependencies first; ties keep insertion order (stable plans). A cycle raises :class:`CycleError` naming
        it, each node followed by one it depends on."""
        try:
            graphlib.TopologicalSorter(self.deps).prepare()
        except graphlib.CycleError as e:
            raise CycleError(list(reversed(e.args[1]))) from None
        out: list[str] = []
        done: set[str] = set()

        def visit(n: str) -> None:  # depth first, so that each node follows its own dependencies closely
            if n not in done:
                done.add(n)
                for d in self.deps[n]:
                    visit(d)
                out.append(n)

        for n in list(self.deps):
            visit(n)
        return out

    def dependents(self, node: str) -> set[str]:
        """Every node that depends on ``node``, directly or not."""
        rev: dict[str, list[str]] = {}
        for n, ds in self.deps.items():
            for d in ds:
                rev.setdefault(d, []).append(n)
        seen: set[str] = set()
        todo = [node]
        while todo:
            for m in rev.get(todo.pop(), []):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    def ancestors(self, node: str) -> set[str]:
        seen: set[str] = set()
        todo = [node]
        while todo:
            for m in self.deps.get(todo.pop(), []):
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen
