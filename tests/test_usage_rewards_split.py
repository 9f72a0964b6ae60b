"""The usage split and the payable-usage rule as pure functions: shares, fallbacks, carry, exclusions."""

from __future__ import annotations

from fractions import Fraction

import pytest

from pipelines.rewards.usage import PaidRun, UsageInputs, payable_usage, usage_root
from pipelines.rewards.usage_split import AdapterBehind, Source, price_event, split_usage
from pipelines.rewards.usage_terms import UsageTerms

TERMS = UsageTerms(price_per_token_wei=1_000, sources_bps=5_000, training_bps=4_000, trainer_bps=1_000)
A, B, C, T, U = ("0x" + f"{n:02x}" * 20 for n in (0xA1, 0xB2, 0xC3, 0x77, 0x88))


def amounts(priced, carry_in: int = 0) -> dict[tuple[str, str, int | None], int]:
    split = split_usage(priced, carry_in)
    out: dict[tuple[str, str, int | None], int] = {}
    for line, amount in split.lines:
        key = (line.account, line.role, line.contribution_id)
        out[key] = out.get(key, 0) + amount
    return out


def adapter(adapter_id: str = "ad-1", weight: float = 1.0, trainer: str | None = T, datanet: int = 1,
            contributors=None) -> AdapterBehind:
    contributors = contributors if contributors is not None else {10: (A, Fraction(3)), 11: (B, Fraction(1))}
    return AdapterBehind(adapter_id, datanet, weight, trainer, contributors)


def test_rag_answer_pays_sources_by_weight_training_by_epoch_weight_and_the_trainer():
    event = price_event("use-1", 100_000, TERMS, [Source(20, 1, C, 0.75), Source(21, 1, A, 0.25)], [adapter()])
    assert amounts([event]) == {(C, "source", 20): 37_500, (A, "source", 21): 12_500,
                                (A, "training", 10): 30_000, (B, "training", 11): 10_000, (T, "trainer", None): 10_000}
    assert sum(event.shares.values()) == 100_000


def test_no_sources_give_their_share_to_the_training_contributors():
    event = price_event("use-1", 100_000, TERMS, [], [adapter()])
    assert amounts([event]) == {(A, "training", 10): 67_500, (B, "training", 11): 22_500, (T, "trainer", None): 10_000}


def test_base_model_with_retrieval_pays_the_sources_everything():
    event = price_event("use-1", 10_000, TERMS, [Source(20, 1, C, 1.0)], [])
    assert amounts([event]) == {(C, "source", 20): 10_000}


def test_ensemble_splits_training_and_trainer_by_adapter_weights():
    other = adapter("ad-2", weight=3.0, trainer=U, datanet=2, contributors={30: (C, Fraction(5))})
    event = price_event("use-1", 100_000, TERMS, [], [adapter(weight=1.0), other])
    assert amounts([event]) == {(A, "training", 10): 16_875, (B, "training", 11): 5_625, (C, "training", 30): 67_500,
                                (T, "trainer", None): 2_500, (U, "trainer", None): 7_500}


def test_remainders_carry_over_and_the_carry_in_is_paid_out():
    events = [price_event(f"use-{i}", 7, TERMS, [Source(20, 1, C, 1 / 3), Source(21, 1, A, 2 / 3)], [adapter()])
              for i in range(3)]
    split = split_usage(events, carry_in=0)
    assert split.paid + split.carry_out == 21 and 0 <= split.carry_out < len(split.lines)
    again = split_usage(events, carry_in=split.carry_out + 1000)
    assert again.paid + again.carry_out == 21 + split.carry_out + 1000 and again.carry_out < len(again.lines)
    assert all(amount >= 0 for _, amount in again.lines)


def test_bad_terms_and_weights_are_refused():
    with pytest.raises(ValueError, match="summing to 10000"):
        UsageTerms(1, 5_000, 5_000, 1)
    with pytest.raises(ValueError, match="ensemble weights"):
        price_event("use-1", 10, TERMS, [], [adapter(weight=float("nan"))])


def usage_event(event_id: str, *, adapters=(("ad-1", 1, 1.0),), sources=(), prompt: int = 10,
                completion: int = 5) -> dict:
    return {"event_id": event_id, "adapter_ids": [a[0] for a in adapters], "datanet_ids": [a[1] for a in adapters],
            "adapter_weights": [a[2] for a in adapters], "prompt_tokens": prompt, "completion_tokens": completion,
            "retrieved_sources": [{"datanet_id": 1, "contribution_id": cid, "contributor": who, "chunk_id": f"{cid}:0",
                                   "dataset_version": 1, "score": 0.5} for cid, who in sources]}


def test_payable_usage_excludes_with_a_reason_and_pays_the_rest():
    run = PaidRun(1, 1, {10: (A, Fraction(1))})
    inputs = UsageInputs(
        events=(usage_event("use-ok"), usage_event("use-paid"),
                usage_event("use-unknown", adapters=(("ad-x", 1, 1.0),)),
                usage_event("use-untrained", adapters=(("ad-2", 1, 1.0),)),
                usage_event("use-rag", sources=((20, C),)), usage_event("use-rag-ok", sources=((20, C),)),
                usage_event("use-stray", sources=((20, C),)), usage_event("use-base", adapters=()),
                {**usage_event("use-bad"), "datanet_ids": []}),
        terms=TERMS, source_weights={"use-rag-ok": {20: 1.0}, "use-stray": {99: 1.0}}, runs={(1, "ad-1"): run},
        known_adapters=frozenset({"ad-1", "ad-2"}), trainers={1: T})
    priced, excluded = payable_usage(inputs, {"use-paid": 3})
    assert [p.usage_event_id for p in priced] == ["use-ok", "use-rag-ok"]
    assert priced[0].fee == 15 * TERMS.price_per_token_wei
    assert {x.usage_event_id: x.reason for x in excluded} == {
        "use-paid": "paid in epoch 3",
        "use-unknown": "unknown adapter ad-x",
        "use-untrained": "training run of adapter ad-2 not paid yet",
        "use-rag": "RAG sources not attributed yet",
        "use-stray": "malformed: attribution weights for contributions not retrieved: [99]",
        "use-base": "nobody behind it to pay (the base model alone, no retrieval)",
        "use-bad": "malformed: adapter ids, datanets and weights differ in length",
    }


def test_usage_root_commits_to_the_set_of_ids():
    assert usage_root(["b", "a"]) == usage_root(["a", "b"]) != usage_root(["a"])
    assert usage_root([]) == "0x" + "00" * 32


def test_canary_and_slashed_sources_earn_nothing_and_the_others_take_their_share():
    run = PaidRun(1, 1, {10: (A, Fraction(1))})
    inputs = UsageInputs(
        events=(usage_event("use-mixed", sources=((20, C), (21, B))),
                usage_event("use-only-canary", sources=((21, B),))),
        terms=TERMS, source_weights={"use-mixed": {20: 0.5, 21: 0.5}, "use-only-canary": {21: 1.0}},
        runs={(1, "ad-1"): run}, known_adapters=frozenset({"ad-1"}), trainers={1: T},
        unpayable_sources=frozenset({21}))
    priced, excluded = payable_usage(inputs, {})
    assert not excluded
    mixed, only_canary = (amounts([p]) for p in priced)
    fee = 15 * TERMS.price_per_token_wei
    assert mixed == {(C, "source", 20): fee // 2, (A, "training", 10): fee * 4 // 10, (T, "trainer", None): fee // 10}
    assert only_canary == {(A, "training", 10): fee * 9 // 10, (T, "trainer", None): fee // 10}


def test_an_answers_own_influences_split_the_training_share():
    """Positive scores of paid contributions only, normalised; an unpaid id or a negative score earns nothing."""
    contributors = {10: (A, Fraction(3)), 11: (B, Fraction(1)), 12: (C, Fraction(4))}
    influenced = AdapterBehind("ad-1", 1, 1.0, T, contributors, {11: 0.75, 12: 0.25, 10: -0.5, 99: 9.0})
    assert amounts([price_event("use-1", 100_000, TERMS, [], [influenced])]) == {
        (B, "training", 11): 67_500, (C, "training", 12): 22_500, (T, "trainer", None): 10_000}
    nothing_positive = AdapterBehind("ad-1", 1, 1.0, T, contributors, {10: -0.1, 99: 1.0})
    assert amounts([price_event("use-2", 80_000, TERMS, [], [nothing_positive])]) == {
        (A, "training", 10): 27_000, (B, "training", 11): 9_000, (C, "training", 12): 36_000,
        (T, "trainer", None): 8_000}, "no positive influence on a paid contribution: the run's weights"


def test_payable_usage_passes_a_single_adapters_influences_and_refuses_non_finite_ones():
    run = PaidRun(1, 1, {10: (A, Fraction(1)), 11: (B, Fraction(1))})
    influences = [{"rank": 1, "contribution_id": 11, "score": 0.4}]
    inputs = UsageInputs(
        events=({**usage_event("use-influenced"), "influences": influences},
                {**usage_event("use-nan"), "influences": [{"rank": 1, "contribution_id": 11, "score": float("nan")}]},
                {**usage_event("use-ensemble", adapters=(("ad-1", 1, 1.0), ("ad-1", 1, 1.0))),
                 "influences": influences}),
        terms=TERMS, runs={(1, "ad-1"): run}, known_adapters=frozenset({"ad-1"}), trainers={1: T})
    priced, excluded = payable_usage(inputs, {})
    assert {x.usage_event_id: x.reason for x in excluded} == {
        "use-nan": "malformed: usage event use-nan: influence of contribution 11 is not finite"}
    ensemble, influenced = (amounts([p]) for p in priced)
    fee = 15 * TERMS.price_per_token_wei
    assert influenced == {(B, "training", 11): fee * 9 // 10, (T, "trainer", None): fee // 10}
    assert ensemble[(A, "training", 10)] == ensemble[(B, "training", 11)], "an ensemble's list names no adapter"
