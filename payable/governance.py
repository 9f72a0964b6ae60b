"""Changing a governed parameter: a ProtocolParameters setter passed through the Governor and the timelock.

The protocol's payout parameters (the epoch pool, the usage terms, the harm rule, the reputation prior) are
owned by the timelock, so the only way to change one is a proposal: propose, vote while the vote is open,
queue once it passed, execute once the timelock delay is over (invariant 6). This module is that path for
every caller (``payable govern``, tests, scripts), with the chain as its only memory: a proposal is found by
its id in the Governor's ProposalCreated events, which carry everything queue and execute need.

A change names the parameters by their names in ``ProtocolParameters.all()`` (``epochPool=...``); the
parameters that share a setter with it keep their current values. Whether a value is allowed is the
contract's rule alone: ``propose`` simulates the setter as the timelock would call it and refuses a change
the contract would revert at execution, with the contract's own error, before anyone votes on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.logs import DISCARD

import contracts
from payable.chain import Chain, Deployment, describe_revert
from payable.errors import PayableError

# Each setter of ProtocolParameters and the fields of ``all()`` it sets, in its argument order.
SETTERS = {
    "setEpochPool": ("epochPool",),
    "setUsageTerms": ("usagePricePerToken", "usageSourcesBps", "usageTrainingBps", "usageTrainerBps"),
    "setHarmRule": ("refitMarginBps", "requireRefit"),
    "setReputationPrior": ("priorAccepted", "priorRejected"),
}
SUPPORT = {"against": 0, "for": 1, "abstain": 2}


class ProposalState(IntEnum):
    """OpenZeppelin Governor's ``state()``."""

    PENDING = 0
    ACTIVE = 1
    CANCELED = 2
    DEFEATED = 3
    SUCCEEDED = 4
    QUEUED = 5
    EXPIRED = 6
    EXECUTED = 7


class GovernanceError(PayableError):
    """A change or a step the Governor would refuse: an unknown parameter, a bad value, the wrong state."""


@dataclass(frozen=True)
class Proposal:
    """A proposal as the Governor recorded it, and where it stands at the chain's head."""

    proposal_id: int
    proposer: str
    targets: list[str]
    calldatas: list[bytes]
    description: str
    vote_start: int  # the snapshot block; votes are cast after it
    vote_end: int    # the last block of the vote
    state: ProposalState
    votes: dict[str, int]  # against / for / abstain weights
    eta: int               # the timestamp it can execute from once queued (0 before)

    @property
    def description_hash(self) -> bytes:
        return Web3.keccak(text=self.description)

    def summary(self) -> dict:
        return {"proposal": str(self.proposal_id), "state": self.state.name.lower(), "proposer": self.proposer,
                "description": self.description, "vote_start": self.vote_start, "vote_end": self.vote_end,
                "votes": {k: str(v) for k, v in self.votes.items()}, "eta": self.eta}


class Governance:
    """The Governor, the timelock and the ProtocolParameters of one deployment."""

    def __init__(self, chain: Chain, deployment: Deployment):
        self.chain, self.deployment = chain, deployment
        self.governor = chain.contract(contracts.GOVERNOR, deployment.governor)
        self.timelock = chain.contract(contracts.TIMELOCK, deployment.timelock)
        self.parameters = chain.contract(contracts.PROTOCOL_PARAMETERS, deployment.parameters)
        self.token = chain.contract(contracts.OPEN_TOKEN, deployment.token)

    def fields(self) -> dict[str, str]:
        """Field name -> Solidity type of ``ProtocolParameters.all()``, read from the ABI."""
        (output,) = next(f for f in self.parameters.abi if f.get("name") == "all")["outputs"]
        return {c["name"]: c["type"] for c in output["components"]}

    def current(self) -> dict:
        return dict(zip(self.fields(), self.parameters.functions.all().call(), strict=True))

    def calls(self, changes: dict[str, str]) -> list[tuple[str, list]]:
        """(setter, args) for ``changes`` (field name -> value as typed), each setter once, the fields it sets
        but ``changes`` does not name at their current values; refused if the contract would revert one."""
        types = self.fields()
        unknown = sorted(set(changes) - set(types))
        if unknown:
            raise GovernanceError(f"unknown parameter {', '.join(unknown)}; governed: {', '.join(types)}")
        if not changes:
            raise GovernanceError("nothing to change: name at least one parameter, e.g. epochPool=1000")
        values = {**self.current(), **{name: parse_value(name, text, types[name]) for name, text in changes.items()}}
        out = [(setter, [values[f] for f in fields]) for setter, fields in SETTERS.items()
               if set(fields) & set(changes)]
        for setter, args in out:
            try:
                self.parameters.functions[setter](*args).call({"from": self.deployment.timelock})
            except (ContractCustomError, ContractLogicError) as exc:  # the contract's bounds, as the timelock runs it
                raise GovernanceError(f"{setter}({', '.join(map(str, args))}) would revert at execution: "
                                      f"{describe_revert(exc)}") from exc
        return out

    def propose(self, sender: LocalAccount, changes: dict[str, str], description: str = "") -> Proposal:
        calls = self.calls(changes)
        text = description or "Set " + ", ".join(f"{k}={v}" for k, v in changes.items())
        threshold = self.governor.functions.proposalThreshold().call()
        power = self.token.functions.getVotes(sender.address).call()
        if power < threshold:
            raise GovernanceError(f"{sender.address} has {power} votes delegated, the proposal threshold is "
                                  f"{threshold}")
        targets = [self.parameters.address] * len(calls)
        data = [self.parameters.encode_abi(setter, args=args) for setter, args in calls]
        receipt = self.chain.transact(sender, self.governor.functions.propose(targets, [0] * len(calls), data, text),
                                      label="propose")
        (created,) = self.governor.events.ProposalCreated().process_receipt(receipt, errors=DISCARD)
        return self.proposal(created["args"]["proposalId"])

    def vote(self, sender: LocalAccount, proposal_id: int, support: str) -> tuple[Proposal, int]:
        """Casts ``sender``'s vote; returns the proposal after it and the weight the vote carried."""
        proposal = self._expect(proposal_id, ProposalState.ACTIVE)
        if self.governor.functions.hasVoted(proposal_id, sender.address).call():
            raise GovernanceError(f"{sender.address} has already voted on proposal {proposal_id}")
        weight = self.token.functions.getPastVotes(sender.address, proposal.vote_start).call()
        self.chain.transact(sender, self.governor.functions.castVote(proposal_id, SUPPORT[support]), label="vote")
        return self.proposal(proposal_id), weight

    def queue(self, sender: LocalAccount, proposal_id: int) -> Proposal:
        p = self._expect(proposal_id, ProposalState.SUCCEEDED)
        self.chain.transact(sender, self.governor.functions.queue(p.targets, [0] * len(p.targets), p.calldatas,
                                                                  p.description_hash), label="queue")
        return self.proposal(proposal_id)

    def execute(self, sender: LocalAccount, proposal_id: int) -> Proposal:
        p = self._expect(proposal_id, ProposalState.QUEUED)
        now = self.chain.w3.eth.get_block("latest")["timestamp"]
        if now < p.eta:
            raise GovernanceError(f"proposal {proposal_id} is queued in the timelock until timestamp {p.eta}, "
                                  f"{p.eta - now} s after the chain's latest block"
                                  + _local_hint(f"payable mine 1 --seconds {p.eta - now}"))
        self.chain.transact(sender, self.governor.functions.execute(p.targets, [0] * len(p.targets), p.calldatas,
                                                                    p.description_hash), label="execute")
        return self.proposal(proposal_id)

    def delegate(self, sender: LocalAccount, to: str) -> int:
        """Delegates ``sender``'s OPEN votes to ``to`` (itself to vote with them); returns its balance."""
        self.chain.transact(sender, self.token.functions.delegate(to), label="delegate")
        return self.token.functions.balanceOf(sender.address).call()

    def proposals(self) -> list[Proposal]:
        return [self._from_event(e) for e in self._created()]

    def proposal(self, proposal_id: int) -> Proposal:
        found = self._created(proposal_id)
        if not found:
            raise GovernanceError(f"no proposal {proposal_id} on this deployment's Governor")
        return self._from_event(found[0])

    def _created(self, proposal_id: int | None = None) -> list:
        events = self.governor.events.ProposalCreated().get_logs(from_block=self.deployment.deploy_block)
        return [e for e in events if proposal_id is None or e["args"]["proposalId"] == proposal_id]

    def _from_event(self, event) -> Proposal:
        a = event["args"]
        pid = a["proposalId"]
        against, for_, abstain = self.governor.functions.proposalVotes(pid).call()
        return Proposal(pid, a["proposer"], list(a["targets"]), list(a["calldatas"]), a["description"],
                        a["voteStart"], a["voteEnd"], ProposalState(self.governor.functions.state(pid).call()),
                        {"against": against, "for": for_, "abstain": abstain},
                        self.governor.functions.proposalEta(pid).call())

    def _expect(self, proposal_id: int, wanted: ProposalState) -> Proposal:
        """The proposal, if it is in state ``wanted``; else why not and what to do, in one line."""
        p = self.proposal(proposal_id)
        if p.state == wanted:
            return p
        head = self.chain.w3.eth.block_number
        why = f"proposal {proposal_id} is {p.state.name.lower()}, not {wanted.name.lower()}"
        if p.state == ProposalState.PENDING:
            why += f": its vote opens after block {p.vote_start} (head {head})" + _local_hint(
                f"payable mine {p.vote_start - head + 1}")
        elif p.state == ProposalState.ACTIVE:
            why += f": its vote is open until block {p.vote_end} (head {head})" + _local_hint(
                f"payable mine {p.vote_end - head + 1}")
        elif p.state == ProposalState.DEFEATED:
            why += f" (for {p.votes['for']}, against {p.votes['against']}, or short of quorum)"
        raise GovernanceError(why)


def parse_value(name: str, text: str, solidity_type: str) -> int | bool:
    """``text`` as a value of ``solidity_type`` (``uint<n>`` or ``bool``), or a one-line refusal."""
    text = text.strip()
    if solidity_type == "bool":
        if text.lower() not in ("true", "false"):
            raise GovernanceError(f"{name} is true or false, got {text!r}")
        return text.lower() == "true"
    bits = int(solidity_type.removeprefix("uint") or 256)
    if not re.fullmatch(r"[0-9][0-9_]*", text):
        raise GovernanceError(f"{name} is a whole number of at least 0 (no decimals, units or signs), got {text!r}")
    number = int(text)
    if number >= 2**bits:
        raise GovernanceError(f"{name} {number} does not fit the contract's {solidity_type} (max {2**bits - 1})")
    return number


def _local_hint(command: str) -> str:
    return f"; on the local chain: `{command}`"
