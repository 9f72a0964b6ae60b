"""Context attribution: which of an answer's retrieved sources drove it, and by how much.

A ContextCite-style linear surrogate (Cohen-Wang et al., 2024): ablate random subsets of the sources,
measure the log-probability of the same answer under each subset, fit log p(answer | subset) ~ b + w . mask;
w_i is source i's weight. ``methods`` holds ContextCite itself, leave-one-out, and the cheap default that
the usage rewards run (the same surrogate fitted on an orthogonal design of ablations); ``scorer`` holds the
model-specific part, so the attribution math never knows what model produced the answer.
"""

from pipelines.context_attribution.ablations import factorial_masks, leave_one_out_masks, random_masks
from pipelines.context_attribution.methods import METHODS, ContextAttribution, attribute
from pipelines.context_attribution.scorer import AnswerScorer, CausalLMScorer
from pipelines.context_attribution.surrogate import fit_surrogate, lds

__all__ = ["METHODS", "AnswerScorer", "CausalLMScorer", "ContextAttribution", "attribute", "factorial_masks",
           "fit_surrogate", "lds", "leave_one_out_masks", "random_masks"]
