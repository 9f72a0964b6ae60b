"""Proof of Attribution: influence of each accepted contribution on the datanet's eval loss (issue 5, part 2).

Public entry points: :func:`attribute` (CLI and Dagster; raises :class:`Unscorable` for a datanet that cannot
be scored), :class:`ScoreArguments` and :class:`HarmArguments`, :class:`Task` (the model-specific hooks),
:func:`score_examples` (in process) and ``beam.score_examples_beam`` (Beam), :func:`harmful_contributions` (the
penalty stage's input: flagged by ``harm.py``, confirmed or not by ``counterfactual.py``). The influence table
schema is ``table.INFLUENCE``.
"""

from pipelines.attribution.arguments import HarmArguments, ScoreArguments
from pipelines.attribution.attribute import Attribution, Unscorable, attribute
from pipelines.attribution.scoring import score_examples
from pipelines.attribution.table import INFLUENCE, harmful_contributions
from pipelines.attribution.task import LoRALanguageModelTask, Task

__all__ = ["INFLUENCE", "Attribution", "HarmArguments", "LoRALanguageModelTask", "ScoreArguments", "Task",
           "Unscorable", "attribute", "harmful_contributions", "score_examples"]
