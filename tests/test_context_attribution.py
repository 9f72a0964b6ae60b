"""Context attribution: the surrogate math on a known additive answer model, and the causal-LM scorer."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import PreTrainedTokenizerFast

from pipelines.context_attribution import (
    CausalLMScorer,
    attribute,
    factorial_masks,
    fit_surrogate,
    lds,
    random_masks,
)
from pipelines.context_attribution.scorer import render_prompt
from pipelines.training.arguments import BaseModelSpec
from pipelines.training.base_model import PAD, build_base_model, build_tokenizer


class AdditiveScorer:
    """log p(answer | subset) = sum of the kept sources' true effects + one pairwise interaction + noise."""

    def __init__(self, effects: np.ndarray, seed: int = 0):
        self.effects, self.rng, self.calls = effects, np.random.default_rng(seed), 0

    def log_prob(self, masks: np.ndarray) -> np.ndarray:
        self.calls += len(masks)
        interaction = 0.5 * (masks[:, 0] & masks[:, 1])
        return masks @ self.effects + interaction + self.rng.normal(0, 0.05, len(masks))


@pytest.mark.parametrize("method", ["leave_one_out", "contextcite", "factorial"])
def test_each_method_finds_the_source_the_answer_used(method: str) -> None:
    effects = np.array([0.2, 0.1, 4.0, 0.0, -0.3, 0.1])
    scorer = AdditiveScorer(effects)
    result = attribute(scorer, len(effects), method, seed=1)
    assert int(np.argmax(result.weights)) == 2
    assert result.forward_passes == scorer.calls  # the reported cost is what was spent
    held_out = random_masks(len(effects), 64, seed=99)
    assert lds(result.weights, held_out, AdditiveScorer(effects, seed=5).log_prob(held_out)) > 0.8


def test_default_method_spends_a_quarter_of_contextcite_64() -> None:
    scorer = AdditiveScorer(np.zeros(6))
    assert attribute(scorer, 6).forward_passes == 16 <= 64 // 4
    assert attribute(scorer, 0).forward_passes == 0
    with pytest.raises(ValueError, match="unknown context-attribution method"):
        attribute(scorer, 6, "magic")


def test_surrogate_recovers_exact_linear_weights_and_lds_is_rank_correlation() -> None:
    masks = random_masks(5, 40, seed=3)
    weights = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    fitted, bias = fit_surrogate(masks, masks @ weights + 7.0, ridge=0.0)
    np.testing.assert_allclose(fitted, weights, atol=1e-9)
    assert bias == pytest.approx(7.0)
    values = masks @ weights
    assert lds(weights, masks, values) == pytest.approx(1.0)
    assert lds(-weights, masks, values) == pytest.approx(-1.0)


def test_prompt_keeps_citation_numbers_of_kept_sources() -> None:
    prompt = render_prompt(["alpha", "beta", "gamma"], [True, False, True], "q?")
    assert "[1] alpha" in prompt and "[3] gamma" in prompt and "beta" not in prompt
    assert "(none)" in render_prompt(["alpha"], [False], "q?")


def test_causal_lm_scores_are_independent_of_batching_and_padding() -> None:
    spec = BaseModelSpec()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(spec.vocab_size), pad_token=PAD)
    model = build_base_model(spec)
    sources = ["the cat sat on the mat.", "bread and soup for dinner in the evening.", "one two three."]
    scorer = CausalLMScorer(model, tokenizer, sources, "what did the cat do?", "it sat.", batch_size=4)
    masks = np.array([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0]], dtype=bool)  # different lengths: padded
    batched = scorer.log_prob(masks)
    alone = np.array([scorer.log_prob(m[None])[0] for m in masks])
    np.testing.assert_allclose(batched, alone, rtol=1e-4, atol=1e-4)
    assert np.all(batched < 0) and len(set(np.round(batched, 4))) > 1  # the context changes the answer's score
    assert scorer.forward_passes == 8
    with pytest.raises(ValueError, match="answer is empty"):
        CausalLMScorer(model, tokenizer, sources, "q", "")


@pytest.mark.parametrize("n", [1, 3, 6, 7, 8, 15])
def test_factorial_design_is_balanced_and_orthogonal_to_two_way_interactions(n: int) -> None:
    masks = factorial_masks(n)
    assert len(masks) == 2 * (1 << n.bit_length())
    x = np.where(masks, 1.0, -1.0)
    assert np.all(x.sum(axis=0) == 0)  # every source kept in exactly half the ablations
    np.testing.assert_array_equal(x.T @ x, len(x) * np.eye(n))  # main effects orthogonal
    for i in range(n):  # ... and orthogonal to every pairwise interaction (resolution IV)
        for j in range(i + 1, n):
            assert np.all((x[:, i] * x[:, j]) @ x == 0)


def test_factorial_recovers_the_uniform_average_main_effects_despite_interactions() -> None:
    """On a scorer with a strong pairwise interaction, the design's weights equal the best linear fit over all
    2^n subsets (what ContextCite converges to with unlimited ablations)."""
    effects = np.array([1.0, 0.5, 3.0, 0.0, -0.7])
    every_subset = np.array([[(k >> i) & 1 for i in range(5)] for k in range(32)], dtype=bool)

    def log_prob(masks: np.ndarray) -> np.ndarray:
        return masks @ effects + 2.0 * (masks[:, 0] & masks[:, 2]) - 1.5 * (masks[:, 1] & masks[:, 3])

    population, _ = fit_surrogate(every_subset, log_prob(every_subset), ridge=0.0)
    design = factorial_masks(5)
    fitted, _ = fit_surrogate(design, log_prob(design), ridge=0.0)
    np.testing.assert_allclose(fitted, population, atol=1e-9)
