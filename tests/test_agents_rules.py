"""Serving agents' rules as pure functions: whose usage may be paid (the mechanism), and a validator's checks."""

from __future__ import annotations

from payable.keys import dev_account
from pipelines.log_views import LogView
from pipelines.rewards.agent_checks import check_agent
from pipelines.rewards.agents import AgentBook, agent_book
from pipelines.rewards.usage import PaidRun, UsageInputs, payable_usage
from pipelines.rewards.usage_terms import UsageTerms
from schemas import events
from schemas.usage import USAGE_EVENT, USAGE_EVENT_V3
from serving.agent import ServingAgent
from serving.usage import usage_event
from tests.test_rewards_inputs import fact

TERMS = UsageTerms(price_per_token_wei=1_000, sources_bps=5_000, training_bps=4_000, trainer_bps=1_000)

AGENT, OTHER = ServingAgent(dev_account(10)), ServingAgent(dev_account(11))
ALICE, BOB = "0x" + "a1" * 20, "0x" + "b2" * 20


def served(request_id: str, *, sources=(), prompt: int = 10, completion: int = 5) -> dict:
    return usage_event(request_id=request_id, model="ad-1", adapters=[("ad-1", 1, 1, 1.0)],
                       base_model_hash="0x" + "ba" * 32, prompt_tokens=prompt, completion_tokens=completion,
                       latency_s=0.01, caller=None, finish_reason="stop",
                       retrieved_sources=[{"datanet_id": 1, "contribution_id": cid, "contributor": who,
                                           "chunk_id": f"{cid}:0", "dataset_version": 1, "score": 0.5}
                                          for cid, who in sources])


def test_the_signature_covers_every_field_money_depends_on():
    event = AGENT.sign(served("r-1", sources=[(20, ALICE)]))
    USAGE_EVENT.to_batch([event])
    book = AgentBook(staked=frozenset({AGENT.address}))
    assert book.refusal(event) is None
    tampered = [{**event, "prompt_tokens": 9_999}, {**event, "adapter_ids": ["ad-2"]},
                {**event, "retrieved_sources": [{**event["retrieved_sources"][0], "contributor": BOB}]},
                {**event, "caller": BOB}, {**event, "base_model_hash": "0x" + "00" * 32},
                {**event, "agent": OTHER.address}, {**event, "signature": "0x" + "11" * 65}]
    for changed in tampered:
        assert book.refusal(changed).startswith("bad_signature"), changed


def test_unsigned_unstaked_and_slashed_agents_are_refused_with_their_reason():
    old = {k: v for k, v in served("r-old").items() if k in USAGE_EVENT_V3.schema.names}  # before the agent scheme
    book = AgentBook(staked=frozenset({AGENT.address}), slashed=frozenset({OTHER.address}))
    assert book.refusal(old) == "unsigned"
    assert book.refusal(served("r-none")) == "unsigned", "written by a server without an agent key"
    assert book.refusal(OTHER.sign(served("r-slashed"))) == f"agent_slashed: {OTHER.address}"
    assert AgentBook().refusal(AGENT.sign(served("r-1"))) == f"agent_not_staked: {AGENT.address}"


def test_the_standing_follows_the_registry_facts_in_chain_order_minus_retractions():
    view = LogView()
    for name, block, agent, extra in (("AgentRegistered", 5, AGENT, {"endpoint": "e", "stake": "1"}),
                                      ("AgentRegistered", 6, OTHER, {"endpoint": "e", "stake": "1"}),
                                      ("AgentSlashed", 9, OTHER, {"validator": BOB, "amount": "1", "reason": "x",
                                                                  "evidence_hash": "0x00"})):
        view.by_type[name].append(fact(name, block, agent=agent.address, **extra))
    assert agent_book(view) == AgentBook(frozenset({AGENT.address}), frozenset({OTHER.address}))
    view.by_type["AgentUnstaked"].append(fact("AgentUnstaked", 12, agent=AGENT.address, stake="1", unlocks_at=99))
    assert agent_book(view).staked == frozenset()
    view.by_type["AgentUnstaked"].clear()
    registered = view.by_type["AgentRegistered"][0]["event_id"]
    view.by_type[events.FACT_RETRACTED.name].append({"retracted_event_id": registered})
    assert agent_book(view).staked == frozenset(), "a registration a reorg removed stakes nothing"


def test_payable_usage_refuses_what_no_staked_agent_vouches_for_and_pays_the_rest():
    paid_ok, unsigned = AGENT.sign(served("r-ok")), served("r-unsigned")
    slashed, forged = OTHER.sign(served("r-slashed")), {**AGENT.sign(served("r-forged")), "completion_tokens": 500}
    inputs = UsageInputs(events=(paid_ok, unsigned, slashed, forged), terms=TERMS,
                         runs={(1, "ad-1"): PaidRun(1, 1, {10: (ALICE, 1)})}, known_adapters=frozenset({"ad-1"}),
                         agents=AgentBook(frozenset({AGENT.address}), frozenset({OTHER.address})))
    priced, excluded = payable_usage(inputs, {})
    assert [p.usage_event_id for p in priced] == [paid_ok["event_id"]]
    reasons = {x.usage_event_id: x.reason.split(":")[0] for x in excluded}
    assert reasons == {unsigned["event_id"]: "unsigned", slashed["event_id"]: "agent_slashed",
                       forged["event_id"]: "bad_signature"}
    legacy = UsageInputs(events=(unsigned,), terms=TERMS, runs=inputs.runs, known_adapters=inputs.known_adapters)
    assert len(payable_usage(legacy, {})[0]) == 1, "a deployment without an AgentRegistry checks no agents"


def test_a_validator_finds_each_refuted_claim_of_the_agent_it_checks():
    version = {20: ALICE, 21: BOB}
    honest = AGENT.sign(served("r-honest", sources=[(20, ALICE)]))
    phantom = AGENT.sign(served("r-phantom", sources=[(99, ALICE)]))
    redirected = AGENT.sign(served("r-redirect", sources=[(21, ALICE)]))
    again = AGENT.sign({**served("r-honest", sources=[(20, ALICE)]), "completion_tokens": 6})
    forged = AGENT.sign({**served("r-forged"), "event_id": "use-" + "0" * 32})
    long = AGENT.sign(served("r-long", prompt=100, completion=29))
    not_its = OTHER.sign(served("r-other", sources=[(99, ALICE)]))
    evidence = check_agent(AGENT.address.upper().replace("0X", "0x"),
                           [honest, honest, phantom, redirected, again, forged, long, not_its],
                           lambda datanet, v: version if (datanet, v) == (1, 1) else {}, context_tokens=128)
    assert evidence.reports == 7, "the other agent's event is not this agent's report"
    found = sorted((f.usage_event_id, f.check) for f in evidence.findings)
    assert found == sorted([(phantom["event_id"], "phantom_citation"),
                            (redirected["event_id"], "misattributed_citation"),
                            (again["event_id"], "duplicated_request"), (forged["event_id"], "forged_id"),
                            (long["event_id"], "tokens_beyond_context")])
    assert evidence.reason == ("duplicated_request,forged_id,misattributed_citation,phantom_citation,"
                               "tokens_beyond_context")
    assert evidence.evidence_hash.startswith("0x") and len(evidence.evidence_hash) == 66
    assert not check_agent(AGENT.address, [honest, honest], lambda *_: version, 128).findings, \
        "an identical re-send (a delivery retry) is no finding"
