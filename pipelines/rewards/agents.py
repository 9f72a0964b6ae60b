"""Whose usage reports may be paid: signed by a serving agent that the AgentRegistry lists and never slashed.

A usage event says which adapters and sources a served call used and how many tokens it took; each of those moves
money. Only a serving agent that locked OPEN vouches for its reports, and a validator who finds a bad one slashes
that stake (``pipelines.rewards.agent_checks``). So once a deployment has an AgentRegistry, ``usage.payable_usage``
refuses, with one of these reasons:

- ``unsigned``: no agent or no signature (events written before the agent scheme, v1-v3, or by a server without
  an agent key): nobody vouches for them;
- ``bad_signature``: the signature does not recover the agent it names over the event's digest (a field changed
  after signing, or another key signed);
- ``agent_slashed``: the agent was slashed: none of its reports still unpaid is trusted, whenever it served them;
- ``agent_not_staked``: the agent never registered, or unstaked: it is paid only while it stands behind its
  reports with a stake, so an agent waits for its usage to be paid before it unstakes (the unstake delay is the
  window validators have to check the last of them).

The standing comes from the AgentRegistry's facts on the log (not retracted by a reorg) in chain order, as the log
stands when the epoch closes: the log, not a contract read, is what a replay sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines import log_views
from schemas import events, topics
from schemas.usage import usage_signer

UNSIGNED, BAD_SIGNATURE, AGENT_NOT_STAKED, AGENT_SLASHED = "unsigned", "bad_signature", "agent_not_staked", \
    "agent_slashed"


@dataclass(frozen=True)
class AgentBook:
    """The serving agents' standing (lower-case addresses): listed now, and ever slashed."""

    staked: frozenset[str] = frozenset()
    slashed: frozenset[str] = frozenset()

    def refusal(self, event: dict) -> str | None:
        """Why ``event`` may not be paid on its agent's word (one of the module's reasons, with the agent), or None."""
        agent, signature = event.get("agent"), event.get("signature")
        if not agent or not signature:
            return UNSIGNED
        agent = agent.lower()
        if usage_signer(event) != agent:
            return f"{BAD_SIGNATURE}: not signed by {agent}"
        if agent in self.slashed:
            return f"{AGENT_SLASHED}: {agent}"
        if agent not in self.staked:
            return f"{AGENT_NOT_STAKED}: {agent}"
        return None


def agent_book(facts: log_views.LogView) -> AgentBook:
    """The standing the AgentRegistry's live facts give, applied in chain order."""
    retracted = log_views.retracted_ids(facts)
    changes = sorted((f["block_number"], f["log_index"], event_type.name, f["agent"].lower())
                      for event_type in (events.AGENT_REGISTERED, events.AGENT_UNSTAKED, events.AGENT_SLASHED)
                      for f in facts.of(event_type) if f["event_id"] not in retracted)
    staked: set[str] = set()
    slashed: set[str] = set()
    for _block, _index, name, agent in changes:
        if name == events.AGENT_REGISTERED.name:
            staked.add(agent)
        else:
            staked.discard(agent)
            if name == events.AGENT_SLASHED.name:
                slashed.add(agent)
    return AgentBook(frozenset(staked), frozenset(slashed))


def load_agent_book(bootstrap: str) -> AgentBook:
    """The agents' standing as the chain-facts log stands now."""
    return agent_book(log_views.read_view(bootstrap, topics.CHAIN_FACTS))
