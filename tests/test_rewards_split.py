"""The reward split: pool never exceeded, proportional to influence and reputation, penalties, determinism."""

from __future__ import annotations

import random
from dataclasses import replace

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.rewards.split import (
    EpochInputs,
    EpochParams,
    HarmEvidence,
    SlashReason,
    SlashRequest,
    SplitRules,
    split_rewards,
)
from schemas import rewards as schema


def account(i: int) -> str:
    return f"0x{i:040x}"


def influence_row(cid: int, contributor: int, score: float, *, adapter: str = "a1", version: int = 1,
                  method: str = "tracin") -> dict:
    return {"contribution_id": cid, "contributor": account(contributor), "datanet_id": 1, "dataset_version": version,
            "adapter_id": adapter, "method": method, "score": score, "rank": 0}


def verdict_row(cid: int, contributor: int, status: str = "accepted", reason: str | None = None) -> dict:
    return {"contribution_id": cid, "datanet_id": 1, "contributor": account(contributor), "status": status,
            "reason": reason, "duplicate_of": None}


def inputs(influence: list[dict], verdicts: list[dict], slashed: set[int] = frozenset()) -> EpochInputs:
    return EpochInputs(pa.Table.from_pylist(influence, schema=schema.INFLUENCE),
                       pa.Table.from_pylist(verdicts, schema=schema.VERDICT), frozenset(slashed))


def test_pool_split_in_proportion_to_positive_influence():
    split = split_rewards(
        inputs([influence_row(1, 1, 3.0), influence_row(2, 2, 1.0), influence_row(3, 3, -5.0)],
               [verdict_row(1, 1), verdict_row(2, 2), verdict_row(3, 3)]),
        EpochParams(epoch_id=1, pool=4_000_000, carry_in=7),
    )
    paid = dict(zip(split.accounts, split.amounts, strict=True))
    assert paid == {account(1): 3_000_005, account(2): 1_000_001}, "3:1 of 4,000,007; negative influence earns 0"
    assert split.carry_out == 1
    outcomes = dict(zip(split.allocations.column("contribution_id").to_pylist(),
                        split.allocations.column("outcome").to_pylist(), strict=True))
    assert outcomes[3] == "no_positive_influence"


CONFIRMED = HarmEvidence(score=-4.0, score_low=-6.0, score_high=-2.0, robust_z=-8.0, refit_delta=0.3,
                         refit_spread=0.05)


@pytest.mark.parametrize(("evidence", "why"), [
    (replace(CONFIRMED, refit_delta=None, refit_spread=None), "no counterfactual refit"),
    (replace(CONFIRMED, refit_delta=0.04), "the refit's improvement is inside the seed-to-seed spread"),
    (replace(CONFIRMED, refit_delta=-0.1), "the refit got worse without it"),
    (replace(CONFIRMED, score_high=0.5), "the bootstrap interval reaches above zero"),
])
def test_a_flag_without_confirmed_evidence_earns_nothing_and_keeps_its_stake(evidence, why):
    base = inputs([influence_row(1, 1, 2.0), influence_row(2, 2, 1.0), influence_row(3, 2, -4.0)],
                  [verdict_row(1, 1), verdict_row(2, 2), verdict_row(3, 2)])
    split = split_rewards(replace(base, harmful={3: evidence}), EpochParams(epoch_id=1, pool=3_000))
    assert not split.slash_requests, why
    outcomes = dict(zip(split.allocations["contribution_id"].to_pylist(), split.allocations["outcome"].to_pylist(),
                        strict=True))
    assert outcomes[3] == "harmful_unconfirmed"


def test_a_confirmed_harmful_contribution_earns_nothing_and_is_slashed_with_its_evidence():
    base = inputs([influence_row(1, 1, 2.0), influence_row(2, 2, 1.0), influence_row(3, 2, -4.0)],
                  [verdict_row(1, 1), verdict_row(2, 2), verdict_row(3, 2)])
    flagged = replace(base, harmful={3: CONFIRMED})
    params = EpochParams(epoch_id=1, pool=3_000)
    unflagged = split_rewards(base, params)
    assert not unflagged.slash_requests, "negative influence alone is not a penalty"
    split = split_rewards(flagged, params)
    assert (split.accounts, split.amounts) == (unflagged.accounts, unflagged.amounts), "it earned nothing anyway"
    outcomes = dict(zip(split.allocations["contribution_id"].to_pylist(), split.allocations["outcome"].to_pylist(),
                        strict=True))
    assert outcomes[3] == "harmful_influence"
    (request,) = split.slash_requests
    assert (request.contribution_id, request.reason_code) == (3, SlashReason.HARMFUL)
    assert (request.score_high, request.refit_delta, request.refit_spread) == (-2.0, 0.3, 0.05)
    assert SlashRequest.from_record(request.record()) == request, "the evidence survives the event round trip"
    stricter = split_rewards(flagged, replace(params, rules=SplitRules(refit_margin=10.0)))
    assert not stricter.slash_requests, "the margin over the spread is the rule's, recorded with the epoch"
    assert flagged.digest() != base.digest(), "the harm evidence is part of what the epoch was decided from"
    assert flagged.digest() != replace(base, harmful={3: replace(CONFIRMED, refit_delta=0.2)}).digest()


def test_governance_can_waive_the_refit_but_never_the_interval_below_zero():
    no_refit = replace(CONFIRMED, refit_delta=None, refit_spread=None)
    waived = SplitRules(require_refit=False)
    assert not no_refit.confirmed(SplitRules()), "by default a harm slash needs the counterfactual refit"
    assert no_refit.confirmed(waived)
    assert not replace(no_refit, score_high=0.1).confirmed(waived), "an interval reaching zero is never enough"


def test_reputation_weights_contributors_with_rejected_history_down():
    history = [verdict_row(10 + i, 2, "rejected", "hash_mismatch") for i in range(3)]
    split = split_rewards(
        inputs([influence_row(1, 1, 1.0), influence_row(2, 2, 1.0)], [verdict_row(1, 1), verdict_row(2, 2), *history]),
        EpochParams(epoch_id=1, pool=10**18),
    )
    paid = dict(zip(split.accounts, split.amounts, strict=True))
    # reputations (1+1)/(1+2) = 2/3 and (1+1)/(4+2) = 1/3: twice the payout for the clean history.
    assert paid[account(1)] == pytest.approx(2 * paid[account(2)], rel=1e-8)
    assert not split.slash_requests, "hash_mismatch is rejected without a slash"


def test_redundant_and_harmful_contributions_earn_nothing_and_are_slashed_once():
    verdicts = [verdict_row(1, 1), verdict_row(2, 2, "rejected", "near_duplicate"),
                verdict_row(3, 3, "rejected", "harmful"), verdict_row(4, 4, "rejected", "duplicate"),
                verdict_row(5, 5)]
    influence = [influence_row(1, 1, 1.0), influence_row(2, 2, 9.0), influence_row(3, 3, 9.0),
                 influence_row(5, 5, -2.0)]
    split = split_rewards(replace(inputs(influence, verdicts, slashed={4}), harmful={5: CONFIRMED}),
                          EpochParams(epoch_id=1, pool=1000))
    assert split.accounts == (account(1),) and split.amounts == (1000,)
    requests = {(r.contribution_id, r.reason_code, r.reason) for r in split.slash_requests}
    assert requests == {(2, SlashReason.REDUNDANT, "near_duplicate"), (3, SlashReason.HARMFUL, "harmful"),
                        (5, SlashReason.HARMFUL, "harmful_influence")}, "4 is already slashed"


def test_nothing_eligible_carries_the_whole_pool():
    split = split_rewards(inputs([influence_row(1, 1, 2.0)], [verdict_row(1, 1, "rejected", "duplicate")]),
                          EpochParams(epoch_id=2, pool=500, carry_in=20))
    assert split.accounts == () and split.total == 0 and split.carry_out == 520


def test_several_rows_of_a_contribution_are_averaged_and_methods_must_be_chosen():
    rows = [influence_row(1, 1, 1.0, adapter="a1"), influence_row(1, 1, 3.0, adapter="a2"),
            influence_row(2, 2, 2.0), influence_row(2, 2, 100.0, method="other")]
    verdicts = [verdict_row(1, 1), verdict_row(2, 2)]
    with pytest.raises(ValueError, match="several methods"):
        split_rewards(inputs(rows, verdicts), EpochParams(epoch_id=1, pool=100))
    split = split_rewards(inputs(rows, verdicts), EpochParams(epoch_id=1, pool=100, rules=SplitRules(method="tracin")))
    assert split.amounts == (50, 50), "mean of 1 and 3 equals 2"


def test_conflicting_verdicts_are_refused():
    with pytest.raises(ValueError, match="conflicting verdicts"):
        split_rewards(inputs([], [verdict_row(1, 1), verdict_row(1, 1, "rejected", "duplicate")]),
                      EpochParams(epoch_id=1, pool=1))


scores = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_subnormal=True)
contribution = st.tuples(st.integers(1, 12), scores, st.sampled_from(
    ["accepted", "accepted", "duplicate", "near_duplicate", "harmful", "hash_mismatch"]))


@settings(max_examples=100, deadline=None)
@given(st.lists(contribution, max_size=40), st.integers(0, 10**27), st.integers(0, 10**6), st.randoms())
def test_split_never_exceeds_the_pool_and_is_deterministic(contributions, pool, carry_in, rnd: random.Random):
    influence, verdicts = [], []
    for cid, (who, score, verdict) in enumerate(contributions, start=1):
        influence.append(influence_row(cid, who, score))
        status = "accepted" if verdict == "accepted" else "rejected"
        verdicts.append(verdict_row(cid, who, status, None if status == "accepted" else verdict))
    params = EpochParams(epoch_id=1, pool=pool, carry_in=carry_in)
    original = inputs(influence, verdicts)
    split = split_rewards(original, params)

    assert split.total <= pool + carry_in and split.carry_out >= 0
    assert split.total + split.carry_out == pool + carry_in
    assert all(amount > 0 for amount in split.amounts)
    assert list(split.accounts) == sorted(set(split.accounts))
    if split.accounts:
        assert split.carry_out < len({r["contributor"] for r in influence}), "floor loses under 1 unit per account"

    rnd.shuffle(influence)
    rnd.shuffle(verdicts)
    shuffled = inputs(influence, verdicts)
    assert shuffled.digest() == original.digest(), "the inputs' digest ignores row order"
    again = split_rewards(shuffled, params)
    assert (again.accounts, again.amounts, again.slash_requests) == (split.accounts, split.amounts,
                                                                      split.slash_requests)
