"""Verifying one contribution's chain of evidence, from its chain event to its payout.

Links, in order (each names the transaction that anchors it where there is one):

- ``chain-event``: the ContributionSubmitted event on-chain: datanet, contributor, content hash;
- ``model-commitment``: the AttributionRegistry holds the hash of the adapter's record read off the log;
- ``dataset``: the dataset version the adapter was trained on, rebuilt from its Lance projection, gives the
  committed root, and holds the contribution with the content hash of its chain event (Merkle proof);
- ``influence-commitment`` / ``score``: the same for the influence run and the contribution's score
  (fixed point, ``records.fixed_point``);
- with an epoch: ``epoch`` (its root on-chain; every run it pays is committed and its rows give the committed
  root), ``epoch-runs`` (the registry links the epoch to exactly those runs), ``epoch-params`` (the pool and
  rules the epoch recorded are the governed ProtocolParameters' at the block it recorded; epochs closed before
  governed parameters have no such link) and ``payout``: the split (``pipelines.rewards.split``) recomputed
  from those scores and the epoch's rules gives the root on-chain, and the contributor's amount in the
  epoch's allocation.
Verification stops at the first broken link and names it. Scores are rebuilt from the projections (the
influence table, the dataset version), so a tampered projection fails against the on-chain roots.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

import contracts
from payable.chain import Chain, Deployment
from payable.settings import Settings
from pipelines.commitments import log, sources, trees
from pipelines.commitments.records import (
    SCORE_SCALE,
    InfluenceCommitment,
    ModelCommitment,
    commitment_id,
    fixed_point,
    hexed,
)
from pipelines.rewards import outbox
from pipelines.rewards.epochs import load_epoch
from pipelines.rewards.inputs import load_inputs
from pipelines.rewards.merkle import PayoutTree, build_tree, process_proof, row_leaf
from pipelines.rewards.params import GovernedParams, read_params
from pipelines.rewards.runs import run_names, runs_root
from pipelines.rewards.split import EpochParams, SplitRules, split_rewards
from pipelines.validate import materialize
from schemas import rewards as reward_schema


class BrokenLink(Exception):
    """One link of the chain of evidence does not hold."""

    def __init__(self, link: str, detail: str):
        super().__init__(f"{link}: {detail}")
        self.link, self.detail = link, detail


@dataclass(frozen=True)
class Link:
    name: str
    detail: str
    tx_hash: str = ""


@dataclass
class Evidence:
    """The links verified so far and, if verification stopped, the one that broke."""

    contribution_id: int
    links: list[Link] = dataclasses.field(default_factory=list)
    broken: BrokenLink | None = None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify_contribution(settings: Settings, deployment: Deployment, contribution_id: int,
                        epoch_id: int | None = None) -> Evidence:
    """Walks ``contribution_id``'s links (see the module docstring); never raises for a broken link."""
    evidence = Evidence(contribution_id)
    try:
        _Verifier(settings, deployment, evidence).run(contribution_id, epoch_id)
    except BrokenLink as broken:
        evidence.broken = broken
    return evidence


class _Verifier:
    def __init__(self, settings: Settings, deployment: Deployment, evidence: Evidence):
        self.settings, self.deployment, self.evidence = settings, deployment, evidence
        self.chain = Chain(settings.rpc_url)
        if not deployment.attribution:
            raise BrokenLink("model-commitment", "the deployment has no AttributionRegistry")
        self.attribution = self.chain.contract(contracts.ATTRIBUTION_REGISTRY, deployment.attribution)
        self.log = log.read_log(settings.kafka_bootstrap)
        self.influence = sources.influence_table(settings)
        self.checked_models: set[str] = set()
        self.epoch_entries: list[outbox.Entry] = []
        self.closed: dict = {}

    def add(self, name: str, detail: str, tx_hash: str = "") -> None:
        self.evidence.links.append(Link(name, detail, tx_hash or ""))

    def run(self, contribution_id: int, epoch_id: int | None) -> None:
        datanet_id, content_hash = self._chain_event(contribution_id)
        runs = self._epoch_runs(epoch_id) if epoch_id is not None else self._latest_runs(datanet_id)
        own = [r for r in runs if int(r.split(":")[0]) == datanet_id]
        if not own:
            raise BrokenLink("influence-commitment", f"no committed influence run covers datanet {datanet_id}"
                             + (f" in epoch {epoch_id}" if epoch_id is not None else ""))
        for run in runs:  # an epoch's split depends on every run it pays, not only on this contribution's
            mine = run in own
            commitment, link = self._influence_commitment(run)
            self._model(commitment.adapter_id, contribution_id if mine else None, content_hash)
            self.evidence.links.append(link)
            self._scores(commitment, contribution_id if mine else None)
        if epoch_id is not None:
            self._payout(epoch_id, contribution_id, runs)

    # ---- links ---------------------------------------------------------------------------------

    def _chain_event(self, contribution_id: int) -> tuple[int, str]:
        registry = self.chain.contract(contracts.DATANET_REGISTRY, self.deployment.registry)
        found = registry.events.ContributionSubmitted().get_logs(
            argument_filters={"contributionId": contribution_id}, from_block=self.deployment.deploy_block)
        if not found:
            raise BrokenLink("chain-event", f"no ContributionSubmitted for contribution {contribution_id} on-chain")
        event = found[-1]
        args = event["args"]
        content_hash = hexed(args["contentHash"])
        self.add("chain-event", f"contribution {contribution_id} in datanet {args['datanetId']} by "
                 f"{args['contributor'].lower()}, content {content_hash}", hexed(event["transactionHash"]))
        return int(args["datanetId"]), content_hash

    def _record(self, link: str, commitment_hex: str) -> dict:
        record = log.recorded(self.log.get(commitment_hex, []))
        if record is None:
            raise BrokenLink(link, f"no record of commitment {commitment_hex} on the log")
        return record

    def _onchain(self, link: str, record: dict, what: str) -> str:
        """Checks the registry holds the record's hash; returns the hash of the transaction that put it there."""
        is_model = link == "model-commitment"
        stored = self.attribution.functions.modelRecord if is_model else self.attribution.functions.influenceRecord
        key = bytes.fromhex(record["commitment_id"][2:])
        onchain = hexed(stored(key).call())
        if onchain != record["record_hash"]:
            state = "not committed" if not int(onchain, 16) else f"committed as {onchain}"
            raise BrokenLink(link, f"{what} is {state} on-chain; the log's record hashes to {record['record_hash']}")
        event = self.attribution.events.ModelCommitted if is_model else self.attribution.events.InfluenceCommitted
        found = event().get_logs(argument_filters={"adapterId" if is_model else "runId": key},
                                 from_block=self.deployment.deploy_block)
        return hexed(found[0]["transactionHash"]) if found else ""

    def _model(self, adapter_id: str, contribution_id: int | None, content_hash: str) -> None:
        if adapter_id in self.checked_models and contribution_id is None:
            return
        record = self._record("model-commitment", hexed(commitment_id(adapter_id)))
        model = ModelCommitment.from_record(record)
        if model.record_hash() != record["record_hash"]:
            raise BrokenLink("model-commitment", f"the log's record of {adapter_id} does not hash to its record_hash")
        tx = self._onchain("model-commitment", record, f"adapter {adapter_id}")
        if adapter_id not in self.checked_models:
            self.add("model-commitment", f"adapter {adapter_id}: datanet {model.datanet_id} version "
                     f"{model.dataset_version}, base {model.base_model_hash[:18]}…, weights {model.weights_hash[:18]}…",
                     tx)
        uri = materialize.dataset_uri(self.settings.lance_dir, model.datanet_id)
        try:
            from pipelines.training.data import read_version

            rows = read_version(uri, model.dataset_version).table
        except (FileNotFoundError, ValueError, OSError) as exc:
            raise BrokenLink("dataset", f"cannot read {uri} version {model.dataset_version}: {exc}") from exc
        ids, hashes = rows["contribution_id"].to_pylist(), rows["content_hash"].to_pylist()
        tree = trees.dataset_tree(ids, hashes)
        if hexed(tree.root) != model.dataset_root:
            raise BrokenLink("dataset", f"datanet {model.datanet_id} version {model.dataset_version} gives root "
                             f"{hexed(tree.root)}, committed {model.dataset_root}: a row was changed")
        self.checked_models.add(adapter_id)
        if contribution_id is None:
            return
        if contribution_id not in ids:
            raise BrokenLink("dataset", f"contribution {contribution_id} is not in datanet {model.datanet_id} "
                             f"version {model.dataset_version}")
        i = ids.index(contribution_id)
        if hashes[i] != content_hash:
            raise BrokenLink("dataset", f"the dataset row holds content {hashes[i]}, the chain event {content_hash}")
        proof = self._prove(tree, i, trees.dataset_row(contribution_id, content_hash), model.dataset_root, "dataset")
        self.add("dataset", f"row (contribution {contribution_id}, {content_hash[:18]}…) in version "
                 f"{model.dataset_version}: proof of {proof} hashes to root {model.dataset_root}")

    def _influence_commitment(self, run: str) -> tuple[InfluenceCommitment, Link]:
        """The run's commitment, checked against the chain, and its link (shown after its model's)."""
        record = self._record("influence-commitment", hexed(commitment_id(run)))
        commitment = InfluenceCommitment.from_record(record)
        if commitment.record_hash() != record["record_hash"]:
            raise BrokenLink("influence-commitment", f"the log's record of {run} does not hash to its record_hash")
        tx = self._onchain("influence-commitment", record, f"influence run {run}")
        return commitment, Link("influence-commitment", f"run {run}: scores root {commitment.scores_root} "
                                f"({commitment.contributions} rows, scale {record['score_scale']}; "
                                f"{_quality(commitment)})", tx)

    def _scores(self, commitment: InfluenceCommitment, contribution_id: int | None) -> None:
        rows = sources.run_rows(self.influence, commitment.run)
        if rows.num_rows == 0:
            raise BrokenLink("score", f"the influence table has no rows of run {commitment.run}")
        ids, scores = rows["contribution_id"].to_pylist(), rows["score"].to_pylist()
        try:
            tree = trees.scores_tree(ids, scores)
        except ValueError as exc:
            raise BrokenLink("score", f"run {commitment.run}: {exc}") from exc
        if hexed(tree.root) != commitment.scores_root:
            raise BrokenLink("score", f"the influence table's rows of run {commitment.run} give root "
                             f"{hexed(tree.root)}, committed {commitment.scores_root}: a score was changed")
        if contribution_id is None:
            return
        if contribution_id not in ids:
            raise BrokenLink("score", f"contribution {contribution_id} has no score in run {commitment.run}")
        i = ids.index(contribution_id)
        row = trees.score_row(contribution_id, scores[i])
        proof = self._prove(tree, i, row, commitment.scores_root, "score")
        self.add("score", f"contribution {contribution_id}: score {scores[i]!r} = {fixed_point(scores[i])} / 1e18, "
                 f"proof of {proof} hashes to root {commitment.scores_root}")

    @staticmethod
    def _prove(tree: PayoutTree, index: int, row: bytes, root: str, link: str) -> int:
        proof = tree.proof(index)
        if hexed(process_proof(row_leaf(row), proof)) != root:
            raise BrokenLink(link, f"the Merkle proof does not reach {root}")
        return len(proof)

    # ---- epochs --------------------------------------------------------------------------------

    def _epoch_runs(self, epoch_id: int) -> list[str]:
        self.epoch_entries = outbox.read_epoch(self.settings.kafka_bootstrap, epoch_id)
        closed = [e.record for e in self.epoch_entries if e.type == reward_schema.REWARD_EPOCH_CLOSED.name]
        if not closed:
            raise BrokenLink("epoch", f"epoch {epoch_id} is not closed on the log")
        self.closed = closed[-1]
        return list(self.closed["influence_runs"])

    def _governed(self, epoch_id: int) -> None:
        """The epoch's pool and rules are the governed ones: those the ProtocolParameters held at its block."""
        if "params" not in self.closed:
            return  # closed before governed parameters (RewardEpochClosed v1)
        recorded = GovernedParams.from_json(self.closed["params"])
        if recorded.address != self.deployment.parameters.lower():
            raise BrokenLink("epoch-params", f"epoch {epoch_id} names parameters at {recorded.address or 'none'}, "
                             f"the deployment's are {self.deployment.parameters}")
        on_chain = read_params(self.chain, recorded.address, recorded.block)
        if on_chain != recorded:
            raise BrokenLink("epoch-params", f"epoch {epoch_id} recorded {recorded.to_json()}; the chain held "
                             f"{on_chain.to_json()} at block {recorded.block}")
        rules = recorded.split_rules(json.loads(self.closed["rules"]).get("method")).to_json()
        pool = recorded.pool_for(len(self.closed["influence_runs"]))
        if int(self.closed["pool"]) != pool or rules != self.closed["rules"]:
            raise BrokenLink("epoch-params", f"epoch {epoch_id} was closed with pool {self.closed['pool']} and "
                             f"rules {self.closed['rules']}, not the governed pool {pool} and {rules}")
        self.add("epoch-params", f"epoch {epoch_id} closed by the governed parameters at block {recorded.block}: "
                 f"pool {recorded.epoch_pool}, prior {recorded.prior_accepted}/{recorded.prior_rejected}, harm "
                 f"margin {recorded.refit_margin_bps} bps, refit required {recorded.require_refit}", "")

    def _latest_runs(self, datanet_id: int) -> list[str]:
        """The committed runs on the datanet's newest committed adapter."""
        models = [ModelCommitment.from_record(r) for r in map(log.recorded, self.log.values())
                  if r is not None and "adapter_id" in r and r["datanet_id"] == datanet_id]
        if not models:
            raise BrokenLink("model-commitment", f"no adapter of datanet {datanet_id} is committed")
        newest = max(models, key=lambda m: (m.dataset_version, m.adapter_id))
        return sorted(r["run"] for r in map(log.recorded, self.log.values())
                      if r is not None and "run" in r and r["run"].split(":")[2] == newest.adapter_id)

    def _payout(self, epoch_id: int, contribution_id: int, runs: list[str]) -> None:
        distributor = self.chain.contract(contracts.REWARD_DISTRIBUTOR, self.deployment.distributor)
        onchain_root = hexed(distributor.functions.epochRoot(epoch_id).call())
        publish_tx = next((e.record["tx_hash"] for e in self.epoch_entries
                           if e.type == reward_schema.REWARD_TX_STATE.name and e.record["step"] == "publish"
                           and e.record["state"] == "confirmed"), "")
        if onchain_root != self.closed["merkle_root"]:
            raise BrokenLink("epoch", f"epoch {epoch_id} root on-chain is {onchain_root}, the log closed it with "
                             f"{self.closed['merkle_root']}")
        linked = self.attribution.functions.epochRuns(epoch_id).call()
        if linked != runs_root(runs):
            state = "not linked" if linked == bytes(32) else f"linked to runs 0x{linked.hex()}"
            raise BrokenLink("epoch", f"epoch {epoch_id} is {state} on-chain; the runs it closed on give "
                             f"{hexed(runs_root(runs))}")
        found = self.attribution.events.EpochRunsLinked().get_logs(argument_filters={"epochId": epoch_id},
                                                                   from_block=self.deployment.deploy_block)
        self.add("epoch", f"epoch {epoch_id}: root {onchain_root} published", publish_tx)
        self.add("epoch-runs", f"epoch {epoch_id} pays the committed runs {', '.join(runs)} (runs root "
                 f"{hexed(linked)})", hexed(found[0]["transactionHash"]) if found else "")

        self._governed(epoch_id)
        inputs = load_inputs(self.settings, closing=False)
        names = pa.array(run_names(inputs.influence), type=pa.string())
        inputs = dataclasses.replace(inputs, influence=inputs.influence.filter(pc.is_in(names, pa.array(runs))))
        rules = SplitRules(**{k: tuple(v) if isinstance(v, list) else v
                              for k, v in json.loads(self.closed["rules"]).items()})
        split = split_rewards(inputs, EpochParams(epoch_id, int(self.closed["pool"]), int(self.closed["carry_in"]),
                                                  rules))
        root = hexed(build_tree(split.accounts, split.amounts).root) if split.accounts else hexed(bytes(32))
        if root != onchain_root:
            raise BrokenLink("payout", f"the split recomputed from the committed scores and the epoch's rules gives "
                             f"root {root}, on-chain {onchain_root}")
        contributor = next((r["contributor"] for r in split.allocations.to_pylist()
                            if r["contribution_id"] == contribution_id), None)
        if contributor is None:
            raise BrokenLink("payout", f"contribution {contribution_id} has no allocation in epoch {epoch_id}")
        paid = dict(zip(split.accounts, split.amounts, strict=True))
        expected = paid.get(contributor, 0)
        epoch = load_epoch(self.settings, epoch_id)
        allocated = dict(zip(epoch.accounts, epoch.amounts, strict=True)).get(contributor, 0)
        if allocated != expected:
            raise BrokenLink("payout", f"epoch {epoch_id}'s allocation pays {contributor} {allocated}, the split "
                             f"recomputed from the committed scores pays {expected}")
        self.add("payout", f"{contributor} is paid {expected} in epoch {epoch_id}: the recomputed split gives the "
                 f"on-chain root {onchain_root}", publish_tx)


def _quality(commitment: InfluenceCommitment) -> str:
    """The run's committed quality figures (fixed point, 0 = unmeasured) as an operator reads them."""
    return ", ".join(f"{name} {value / SCORE_SCALE:.3f}" if value else f"{name} unmeasured"
                     for name, value in (("LDS", commitment.lds), ("canary AUC", commitment.auc)))
