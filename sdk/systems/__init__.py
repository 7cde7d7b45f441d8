"""Systems apart from steps: a step builds an artifact; a runtime system (a rag pipeline, a router, a local or
endpoint model, a model with its adapter, a plugin's system) is opened from an applied artifact's manifest, which
records the configuration that was applied and the artifacts it read, never from the current recipe's block.

A kind declares that it is a system and how it is served and opened (``serving`` and ``opener`` of
:class:`sdk.spec.kinds.Kind`); ``dsl ask``, ``dsl route``, ``dsl serve``, the serve step and the eval backend ask
the declaration (:func:`serving_of`) and open through :func:`open_system`, so a plugin's system kind is served and
evaluated without a line changed here. When the recipe has changed since a step was applied, :func:`drift` says so
in one line.
"""

from sdk.systems.applied import applied_block, applied_eval_items, drift, input_artifact, served_artifacts, workdir_of
from sdk.systems.opening import Asker, open_system, serving_of

__all__ = ["Asker", "applied_block", "applied_eval_items", "drift", "input_artifact", "open_system", "served_artifacts", "serving_of",
           "workdir_of"]
