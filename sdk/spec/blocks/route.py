"""``route { domain = SYSTEM  general = SYSTEM | endpoint {...}  examples = "x.jsonl" }``: the query router."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from sdk import expr as _expr
from sdk.spec.blocks.eval import condition_problems
from sdk.spec.kinds import Dep, content_facets, declare
from sdk.spec.objects import Endpoint
from sdk.spec.paths import named_files, path_problem
from sdk.spec.values import Block, Expr, Fraction, Problem, Ref, Seed, ref_of


def _check(spec: Any, label: str, block: Any, check_files: bool) -> list[Problem]:
    out = condition_problems(spec, ("route", label, "threshold"), block.threshold)
    if block.threshold is not None and not _expr.metrics(block.threshold):  # a constant: checked now, not at apply
        value = _expr.evaluate(block.threshold, lambda m: 0.0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            out.append(Problem(path=("route", label, "threshold"),
                               message=f"threshold = {_expr.to_text(block.threshold)} is not a probability between "
                                       "0 and 1", hint="a query goes to the domain when its probability is at least "
                                                       "the threshold: write e.g. threshold = 0.6"))
    problem = path_problem(spec, block.examples) if check_files and block.examples else None
    if problem:
        out.append(Problem(path=("route", label, "examples"), message=problem))
    return out


def routed_systems(block: Any) -> set[str]:
    out = {str(block.domain), *(str(t) for t in block.targets.values())}
    if isinstance(block.general, Ref):
        out.add(str(block.general))
    return out


def _threshold_systems(block: Any) -> set[str]:
    return {m.system for m in _expr.metrics(block.threshold)} if block.threshold is not None else set()


def _implicit(spec: Any, label: str, block: Any) -> list[Dep]:
    """The evals whose metrics the threshold reads."""
    wanted = _threshold_systems(block)
    return [(f"eval.{lbl}", ("metrics",)) for lbl, ev in spec.eval.items()
            if wanted & {str(s) for s in ev.systems if isinstance(s, Ref)}]


def _consumes(spec: Any, label: str, block: Any, dep: str) -> Optional[tuple[str, ...]]:
    """An eval set gives its questions (and its metrics, when it measured a routed system: the quality/cost
    curve reads them); a routed system is only named, so its weights do not enter the router."""
    kind, _, dep_label = dep.partition(".")
    if kind == "eval":
        ev = spec.eval.get(dep_label)
        measured = {str(s) for s in ev.systems if isinstance(s, Ref)} if ev is not None else set()
        return ("items", "metrics") if measured & (routed_systems(block) | _threshold_systems(block)) else ("items",)
    if dep in routed_systems(block):
        return ()
    return None


@declare("route", labelled=False, backend=("sklearn", "sdk.backends.routing.route:RouteBackend",
                                            "pip install 'domain-dsl[serve]'"),
         check=_check, implicit=_implicit, consumes=_consumes, facets=content_facets,
         reads=lambda spec, block: named_files(spec, block, ("examples",)),
         serving="router", opener="sdk.backends.routing.router:open_router")
class RouteBlock(Block):
    """A lightweight classifier that sends each query to the domain system or the general one."""

    classifier: Literal["tfidf", "embedding"] = Field(default="tfidf", description="tfidf or embedding (all-MiniLM-L6-v2) + logistic regression")
    examples: Optional[str] = Field(default=None, description="JSONL of {text, target} rows")
    eval_sets: list[ref_of("eval")] = Field(default_factory=list, description="Eval sets whose questions are domain examples")  # type: ignore[valid-type]
    domain: ref_of("@system") = Field(description="System serving domain queries")  # type: ignore[valid-type]
    targets: dict[str, ref_of("@system")] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="Extra named targets for more than one domain: { law = rag.law }"
    )
    general: Optional[Union[ref_of("@system"), Endpoint]] = Field(  # type: ignore[valid-type]
        default=None, description="Where everything else goes; without it, the domain system answers those queries too"
    )
    threshold: Optional[Expr] = Field(default=None, description="Probability above which a query goes to the domain (default 0.5)")
    domain_share: Optional[Fraction] = Field(default=None, description="Calibrate the threshold to send this share of held-out traffic to the domain")
    min_domain_recall: Fraction = Field(
        default=0.5, description="The route step fails its gate (and auto is not served) when a smaller share of the "
        "domain's held-out examples reaches the domain; 0 turns the check off")
    holdout: float = Field(default=0.2, gt=0.0, lt=0.9, description="Share of examples held out for accuracy and calibration")
    seed: Seed = Field(default=0, description="Seed of the split")
    backend: Optional[str] = Field(default=None, description="Backend name (default: sklearn)")

    @model_validator(mode="after")
    def _threshold_or_share(self) -> "RouteBlock":
        if self.threshold is not None and self.domain_share is not None:
            raise PydanticCustomError("incompatible", "give threshold or domain_share, not both", {})
        named = [("domain", self.domain)] + [(f"targets.{k}", v) for k, v in self.targets.items()]
        named += [("general", self.general)] if isinstance(self.general, Ref) else []
        for i, (what, ref) in enumerate(named):
            first = next((w for w, r in named[:i] if r == ref), None)
            if first is not None:
                raise PydanticCustomError("incompatible", "{what} and {first} both name {ref}: the router would learn "
                                          "to tell apart questions that go to the same system; drop {what}",
                                          {"what": what, "first": first, "ref": str(ref)})
        clash = sorted({"domain", "general"} & set(self.targets))
        if clash:
            raise PydanticCustomError("incompatible", "targets = { {name} = ... }: {name} is the name of the "
                                      "route's own {name} target; give this target another name",
                                      {"name": clash[0]})
        if self.examples is None and not self.eval_sets:
            raise PydanticCustomError("incompatible", "a route needs examples = \"FILE.jsonl\" or eval_sets = [eval.NAME]", {})
        return self
