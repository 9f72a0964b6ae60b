"""Putting a closed epoch on-chain exactly once (invariant 4): fund, publish, push, slash.

Each effect is a ``txsteps.Step`` whose chain check makes it idempotent and whose intent goes on the
rewards outbox before the transaction is sent:

- ``fund``: the operator tops the distributor up to ``outstanding + total`` from the treasury (the timelock),
  spending the allowance governance approved it for (``transferFrom``; no key holds the treasury's tokens);
  done once the balance covers it or the epoch is published;
- ``publish``: the operator publishes (epoch, root, total) (done when ``epochRoot(epoch)`` is our root; a
  different root there is an ``EpochConflict``, never overwritten: the contract refuses anyway);
- ``link``: the operator links the published epoch to the influence runs it pays, by their commitment ids, on
  the AttributionRegistry (done when ``epochRuns(epoch)`` holds their root; skipped, and reported, while a
  run is not committed there: ``payable commit`` first);
- ``anchor-usage``: the operator anchors the epoch's usage batch (the root over the ids of the usage events it
  paid, and their count) on the AttributionRegistry (done when ``usageRoot(epoch)`` holds it; a different root
  there is an ``EpochConflict``);
- ``push-<k>``: for small epochs, the operator pays batch k of accounts with ``claimBatch`` (done when all
  of the batch have claimed; accounts that claimed themselves meanwhile are left out of the call);
- ``slash-<id>``: the validator slashes a contribution's stake (done once its status is Slashed; skipped,
  and reported, when the stake was already released or the contribution is unknown on-chain).
Kill the emitter anywhere and run it again: it reads the outbox, checks the chain, and carries on. Once
every step is done (or can never happen), a RewardEpochOnChain event says the epoch is finished there.
"""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

import contracts
from payable.chain import Chain, Deployment
from payable.keys import Role, load_account
from payable.settings import Settings
from pipelines.rewards import outbox
from pipelines.rewards.epochs import EpochConflict, load_epoch
from pipelines.rewards.runs import run_ids, runs_root
from pipelines.rewards.store import ClosedEpoch
from pipelines.rewards.txsteps import Step, StepOutcome, TxRunner, TxScope, rpc
from schemas import rewards as schema

PUSH_MAX_ACCOUNTS = 256  # push mode by default up to this many accounts; larger epochs are claimed
PUSH_BATCH = 64          # accounts per claimBatch transaction (about 2M gas)
SLASHED = 2
CANNOT_SLASH = {0: "no such contribution on-chain", 3: "stake already released to the contributor"}


@dataclass(frozen=True)
class Signers:
    """Who signs what (least authority): the operator funds (within the treasury's allowance), publishes and
    pushes; the validator slashes."""

    operator: LocalAccount
    validator: LocalAccount

    @classmethod
    def from_env(cls, settings: Settings) -> Signers:
        local = settings.local_chain
        return cls(load_account(Role.OPERATOR, local_chain=local), load_account(Role.VALIDATOR, local_chain=local))


@dataclass(frozen=True)
class EmitResult:
    epoch_id: int
    merkle_root: str
    total: int
    steps: tuple[StepOutcome, ...]

    @property
    def ok(self) -> bool:
        """Nothing failed: every step is done, or skipped because it can never happen (reported, not retried)."""
        return all(step.state in ("done", "skipped") for step in self.steps)


def emit_epoch(settings: Settings, deployment: Deployment, epoch_id: int, *, push: bool | None = None,
               signers: Signers | None = None) -> EmitResult:
    """Funds, publishes, optionally pushes and slashes for closed epoch ``epoch_id``; safe to rerun."""
    epoch = load_epoch(settings, epoch_id)
    signers = signers or Signers.from_env(settings)
    chain = Chain(settings.rpc_url)
    # web3 validates every call against eth_chainId; the chain id cannot change under a running emitter.
    chain.w3.provider.cacheable_requests = {"eth_chainId"}
    chain.w3.provider.cache_allowed_requests = True
    writer = outbox.OutboxWriter(settings.kafka_bootstrap)
    try:
        history = outbox.read_epoch(settings.kafka_bootstrap, epoch_id)
        runner = TxRunner(chain, writer, TxScope.epoch(epoch_id, deployment.distributor), history)
        marker = next(({**schema.USAGE_BATCH_V1, **e.record} for e in reversed(history)
                       if e.type == schema.REWARD_EPOCH_CLOSED.name), None)
        steps = _steps(chain, deployment, epoch, signers, push, marker)
        outcomes: list[StepOutcome] = []
        for step in steps:
            outcomes.append(runner.run(step))
            if outcomes[-1].state != "done" and step.name in ("fund", "publish"):
                break  # nothing after them can succeed without them
        result = EmitResult(epoch_id, "0x" + epoch.root.hex(), epoch.total, tuple(outcomes))
        if result.ok:
            _record_on_chain(writer, history, chain.chain_id, deployment.distributor, result)
    finally:
        writer.close()
    return result


def _record_on_chain(writer: outbox.OutboxWriter, history: list[outbox.Entry], chain_id: int, distributor: str,
                     result: EmitResult) -> None:
    """Marks the epoch finished on this distributor, so the due-epoch rule stops resuming it (once)."""
    record = {"event_id": outbox.derived_id("on-chain", chain_id, distributor.lower(), result.epoch_id,
                                            result.merkle_root),
              "epoch_id": result.epoch_id, "chain_id": chain_id, "distributor": distributor.lower(),
              "merkle_root": result.merkle_root}
    if not any(e.record.get("event_id") == record["event_id"] for e in history):
        writer.append(schema.REWARD_EPOCH_ON_CHAIN, [record])


def _steps(chain: Chain, deployment: Deployment, epoch: ClosedEpoch, signers: Signers,
           push: bool | None, marker: dict | None) -> list[Step]:
    runs = marker["influence_runs"] if marker else []
    usage_events = marker["usage_events"] if marker else 0
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)
    steps = []
    if epoch.accounts:
        steps += [_fund(epoch, distributor, token, deployment.timelock, signers.operator),
                  _publish(epoch, distributor, signers.operator)]
        attribution = chain.contract(contracts.ATTRIBUTION_REGISTRY, deployment.attribution) \
            if deployment.attribution else None
        if attribution is not None and runs:
            steps.append(_link(epoch.epoch_id, runs, attribution, signers.operator))
        if attribution is not None and usage_events:
            assert marker is not None  # usage events are counted on the marker
            steps.append(_anchor_usage(epoch.epoch_id, marker["usage_root"], usage_events, attribution,
                                       signers.operator))
        use_push = push if push is not None else len(epoch.accounts) <= PUSH_MAX_ACCOUNTS
        if use_push:
            steps += [_push(epoch, distributor, signers.operator, start)
                      for start in range(0, len(epoch.accounts), PUSH_BATCH)]
    steps += [_slash(request.contribution_id, request.reason_code, registry, signers.validator)
              for request in epoch.slash_requests]
    return steps


def _published(epoch: ClosedEpoch, distributor) -> bool:
    root = distributor.functions.epochRoot(epoch.epoch_id).call()
    if root == epoch.root:
        return True
    if root != bytes(32):
        raise EpochConflict(f"epoch {epoch.epoch_id} is published on-chain with root 0x{root.hex()}, "
                            f"ours is 0x{epoch.root.hex()}")
    return False


def _fund(epoch: ClosedEpoch, distributor, token, treasury: str, funder: LocalAccount) -> Step:
    def shortfall() -> int:
        required = distributor.functions.outstanding().call() + epoch.total
        return required - token.functions.balanceOf(distributor.address).call()

    def check() -> str | None:
        if _published(epoch, distributor):
            return "epoch already published"
        return "distributor balance covers the epoch" if shortfall() <= 0 else None

    def call():
        missing = rpc(shortfall)
        return token.functions.transferFrom(treasury, distributor.address, missing) if missing > 0 else None

    return Step("fund", funder, check, call)


def _publish(epoch: ClosedEpoch, distributor, operator: LocalAccount) -> Step:
    def check() -> str | None:
        return "root on-chain" if _published(epoch, distributor) else None

    return Step("publish", operator, check,
                lambda: distributor.functions.publishEpoch(epoch.epoch_id, epoch.root, epoch.total))


def _link(epoch_id: int, runs: list[str], attribution, operator: LocalAccount) -> Step:
    ids, root = run_ids(runs), runs_root(runs)

    def check() -> str | None:
        return _written_once(attribution.functions.epochRuns(epoch_id).call(), root, "runs linked on-chain",
                             f"epoch {epoch_id} is linked on-chain to runs")

    def blocked() -> str | None:
        missing = [run for run in runs if attribution.functions.influenceRecord(run_ids([run])[0]).call() == bytes(32)]
        return f"not committed on-chain (run `payable commit`): {', '.join(missing)}" if missing else None

    return Step("link", operator, check, lambda: attribution.functions.linkEpoch(epoch_id, ids), blocked)


def _anchor_usage(epoch_id: int, root: str, count: int, attribution, operator: LocalAccount) -> Step:
    batch = bytes.fromhex(root.removeprefix("0x"))

    def check() -> str | None:
        return _written_once(attribution.functions.usageRoot(epoch_id).call(), batch, "usage batch anchored on-chain",
                             f"epoch {epoch_id}'s usage batch is anchored on-chain as")

    return Step("anchor-usage", operator, check,
                lambda: attribution.functions.anchorUsage(epoch_id, batch, count))


def _written_once(onchain: bytes, ours: bytes, done: str, conflict: str) -> str | None:
    """``done`` when the chain holds ``ours``; None while it holds nothing; a different value there is never
    overwritten (the contract refuses a second write anyway): ``EpochConflict``."""
    if onchain == ours:
        return done
    if onchain != bytes(32):
        raise EpochConflict(f"{conflict} 0x{onchain.hex()}, ours is 0x{ours.hex()}")
    return None


def _push(epoch: ClosedEpoch, distributor, operator: LocalAccount, start: int) -> Step:
    batch = range(start, min(start + PUSH_BATCH, len(epoch.accounts)))

    def unclaimed() -> list[int]:
        with distributor.w3.batch_requests() as requests:  # one round trip for the whole batch
            for i in batch:
                requests.add(distributor.functions.isClaimed(epoch.epoch_id, i))
            flags = requests.execute()
        return [i for i, done in zip(batch, flags, strict=True) if not done]

    def check() -> str | None:
        return "every account of the batch has claimed" if not unclaimed() else None

    def call():
        claims = [epoch.claim_args(i) for i in rpc(unclaimed)]
        return distributor.functions.claimBatch(epoch.epoch_id, claims) if claims else None

    return Step(f"push-{start // PUSH_BATCH}", operator, check, call)


def _slash(contribution_id: int, reason_code: int, registry, validator: LocalAccount) -> Step:
    def status() -> int:
        return registry.functions.contributions(contribution_id).call()[3]

    return Step(f"slash-{contribution_id}", validator,
                check=lambda: "slashed" if status() == SLASHED else None,
                call=lambda: registry.functions.slash(contribution_id, reason_code),
                blocked=lambda: CANNOT_SLASH.get(status()))  # Staked is not in it: that one we slash
