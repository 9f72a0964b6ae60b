"""The emitter on a real anvil + broker: killed at every step, rerun, and every effect happened once."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import requests

import contracts
from payable.chain import Chain, Deployment
from payable.content_store import ContentStore
from payable.datanets import DatanetSpec, contribute, create_datanet
from payable.keys import Role, dev_account
from payable.settings import Settings
from pipelines.rewards import epochs, outbox, txsteps
from pipelines.rewards.claims import claim
from pipelines.rewards.emitter import emit_epoch
from pipelines.rewards.split import EpochInputs
from pipelines.rewards.txsteps import CRASH_ENV
from schemas import rewards as schema
from tests.chain_helpers import fixed_params
from tests.conftest import stack_env

REPO = Path(__file__).resolve().parent.parent
DEPLOYER, OPERATOR, VALIDATOR = (dev_account(r.value) for r in (Role.DEPLOYER, Role.OPERATOR, Role.VALIDATOR))
CONTRIBUTORS = [dev_account(i) for i in (3, 4, 5)]
POOL = 1_000 * 10**18


def setup_epoch(settings: Settings, chain: Chain, deployment: Deployment, tmp_path: Path, epoch_id: int = 1,
                extra_accounts: int = 20) -> epochs.EpochResult:
    """Three real contributions by dev account 3 (two of them duplicates to slash), plus scored accounts."""
    store = ContentStore(settings.content_dir)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    datanet = create_datanet(chain, deployment, store, DEPLOYER, DatanetSpec(f"net-{epoch_id}"), min_stake=10**18,
                             max_contribution_size=10_000, validators=[VALIDATOR.address])
    chain.transact(DEPLOYER, token.functions.transfer(CONTRIBUTORS[0].address, 3 * 10**18), label="stake money")
    files = []
    for i in range(3):
        path = tmp_path / f"c{epoch_id}-{i}.txt"
        path.write_text(f"contribution {epoch_id}-{i}")
        files.append(path)
    submitted = contribute(chain, deployment, store, CONTRIBUTORS[0], datanet, files)
    ids = [s.contribution_id for s in submitted]

    accounts = [c.address.lower() for c in CONTRIBUTORS] + [f"0x{0xBEEF0000 + i:040x}" for i in range(extra_accounts)]
    influence, verdicts = [], []
    for n, who in enumerate(accounts):
        cid = ids[0] if n == 0 else 1000 * epoch_id + n
        influence.append({"contribution_id": cid, "contributor": who, "datanet_id": datanet, "dataset_version": 1,
                          "adapter_id": "a", "method": "m", "score": 1.0 + n, "rank": n})
        verdicts.append({"contribution_id": cid, "datanet_id": datanet, "contributor": who, "status": "accepted",
                         "reason": None, "duplicate_of": None})
    for cid, reason in ((ids[1], "duplicate"), (ids[2], "near_duplicate")):
        verdicts.append({"contribution_id": cid, "datanet_id": datanet, "contributor": accounts[0],
                         "status": "rejected", "reason": reason, "duplicate_of": ids[0]})
    inputs = EpochInputs(pa.Table.from_pylist(influence, schema=schema.INFLUENCE),
                         pa.Table.from_pylist(verdicts, schema=schema.VERDICT), frozenset())
    return epochs.close_epoch(settings, epoch_id, inputs, fixed_params(POOL))


def run_cli(settings: Settings, *args: str, crash_at: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``payable <args>`` as a separate process against the test's services (optionally killed at a step, with
    ``env`` added to its environment)."""
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV} | stack_env(settings) | (env or {})
    if crash_at:
        env[CRASH_ENV] = crash_at
    command = [sys.executable, "-c", "from payable.cli import main; main()", "--data-dir", str(settings.data_dir),
               *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def emitter_processes() -> multiprocessing.context.BaseContext:
    """Child processes forked from a clean server that has the emitter imported: a real separate process that
    starts in milliseconds, and never a fork of the test process with its lance/arrow threads."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["pytest", "pipelines.rewards.emitter", "tests.test_rewards_emitter"])
    return context


def emit_killed(settings: Settings, deployment: Deployment, epoch_id: int, crash_at: str, **options) -> int | None:
    """emit_epoch in a child process that SIGKILLs itself at ``crash_at``; returns its exit code."""
    child = emitter_processes().Process(
        target=_emit_with_crash, args=(settings, deployment, epoch_id, crash_at, options))
    child.start()
    child.join(120)
    return child.exitcode


def _emit_with_crash(settings: Settings, deployment: Deployment, epoch_id: int, crash_at: str, options: dict) -> None:
    os.environ[CRASH_ENV] = crash_at
    emit_epoch(settings, deployment, epoch_id, **options)


def _emit_with_late_receipts(settings: Settings, deployment: Deployment, epoch_id: int, crash_at: str) -> None:
    """emit_epoch as if each receipt arrived just after the emitter asked for it the second time (once before
    sending, once after): the race in which the nonce check, not the receipt check, first sees it mined."""
    from collections import Counter

    from web3.eth import Eth
    from web3.exceptions import TransactionNotFound

    real, asked = Eth.get_transaction_receipt, Counter()

    def late(self, transaction_hash):
        asked[transaction_hash] += 1
        if asked[transaction_hash] <= 2:
            raise TransactionNotFound(f"{transaction_hash} not mined yet")
        return real(self, transaction_hash)

    Eth.get_transaction_receipt = late
    _emit_with_crash(settings, deployment, epoch_id, crash_at, {"push": False})


def logs(chain: Chain, contract, event: str, **filters) -> list:
    return list(getattr(contract.events, event)().get_logs(from_block=0, argument_filters=filters or None))


@pytest.mark.parametrize("point", ["after_intent", "after_send", "after_receipt"])
def test_killed_at_every_step_then_rerun_pays_everyone_exactly_once(stack, chain, deployment, tmp_path, point):
    """Kill the emitter at ``point`` of each step in turn (each rerun first recovers the step killed before)."""
    closed = setup_epoch(stack, chain, deployment, tmp_path)
    for step in ("fund", "publish", "push", "slash"):
        assert emit_killed(stack, deployment, 1, f"{step}:{point}") == -9, f"{step}:{point} was not reached"
    assert emit_epoch(stack, deployment, 1).ok

    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    registry = chain.contract(contracts.DATANET_REGISTRY, deployment.registry)
    epoch = epochs.load_epoch(stack, 1)
    assert len(logs(chain, distributor, "EpochPublished")) == 1
    funding = logs(chain, token, "Transfer", to=deployment.distributor)
    assert [f["args"]["value"] for f in funding] == [epoch.total]
    paid = [(e["args"]["account"].lower(), e["args"]["amount"]) for e in logs(chain, distributor, "RewardClaimed")]
    assert sorted(paid) == sorted(zip(epoch.accounts, epoch.amounts, strict=True)), "each account once, exact amount"
    slashed = sorted(e["args"]["contributionId"] for e in logs(chain, registry, "StakeSlashed"))
    assert slashed == sorted(r.contribution_id for r in epoch.slash_requests) and len(slashed) == 2
    assert distributor.functions.outstanding().call() == 0
    assert closed.carry_out == POOL - epoch.total

    block = chain.w3.eth.block_number
    assert emit_epoch(stack, deployment, 1).ok
    assert chain.w3.eth.block_number == block, "a rerun of a finished epoch sends nothing"


def test_after_receipt_crash_point_fires_when_the_nonce_check_sees_the_receipt_first(stack, chain, deployment,
                                                                                      tmp_path):
    setup_epoch(stack, chain, deployment, tmp_path, extra_accounts=2)
    child = emitter_processes().Process(target=_emit_with_late_receipts,
                                        args=(stack, deployment, 1, "fund:after_receipt"))
    child.start()
    child.join(120)
    assert child.exitcode == -9, "fund:after_receipt was not reached on the late-receipt path"
    assert emit_epoch(stack, deployment, 1, push=False).ok
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    assert len(logs(chain, token, "Transfer", to=deployment.distributor)) == 1


def test_intent_whose_nonce_was_taken_is_superseded_not_doubled(stack, chain, deployment, tmp_path):
    setup_epoch(stack, chain, deployment, tmp_path, extra_accounts=3)
    assert emit_killed(stack, deployment, 1, "fund:after_intent", push=False) == -9
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    # The funding (operator) key is used elsewhere meanwhile: its next transaction takes the intent's nonce.
    chain.transact(OPERATOR, token.functions.approve(CONTRIBUTORS[2].address, 5), label="other use")

    result = emit_epoch(stack, deployment, 1, push=False)
    assert result.ok, result.steps
    states = [e.record["state"] for e in outbox.read_epoch(stack.kafka_bootstrap, 1)
              if e.type == schema.REWARD_TX_STATE.name and e.record["step"] == "fund"]
    assert states[:2] == ["intent", "superseded"] and states.count("confirmed") == 1
    funding = logs(chain, token, "Transfer", to=deployment.distributor)
    assert len(funding) == 1


def test_claim_with_files_deleted_replays_the_log_and_pays_once(stack, chain, deployment, tmp_path):
    closed = setup_epoch(stack, chain, deployment, tmp_path, extra_accounts=2)
    assert emit_epoch(stack, deployment, 1, push=False).ok
    shutil.rmtree(epochs.epoch_dir(stack, 1))
    fresh = Settings(**{**stack.__dict__, "data_dir": tmp_path / "empty"})
    replayed = epochs.replay_epoch(fresh, 1)
    assert "0x" + replayed.root.hex() == closed.merkle_root and replayed.total == closed.total

    first = claim(stack, deployment, 1, CONTRIBUTORS[1])
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    assert first.tx_hash is not None
    assert token.functions.balanceOf(CONTRIBUTORS[1].address).call() == first.amount > 0
    assert claim(stack, deployment, 1, CONTRIBUTORS[1]).tx_hash is None, "second claim: no transaction"
    cli = run_cli(stack, "claim", "--epoch", "1", "--account", CONTRIBUTORS[2].address)
    assert cli.returncode == 0 and '"already_claimed": false' in cli.stdout, cli.stderr
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    assert len(logs(chain, distributor, "RewardClaimed")) == 2
    claimed = json.loads(cli.stdout)
    assert claimed["index"] == epochs.load_epoch(stack, 1).index_of(CONTRIBUTORS[2].address), "its rank"
    assert distributor.functions.isClaimed(1, claimed["index"]).call()

    # A returning contributor's claim in a later epoch sets a bit in a bitmap word that another claim of the
    # epoch already wrote, and adds to a balance it holds: within the 80k gas goal; the first claim of the
    # epoch's word pays for the fresh word (20,000 - 2,900 more for its SSTORE).
    setup_epoch(stack, chain, deployment, tmp_path, epoch_id=2, extra_accounts=2)
    assert emit_epoch(stack, deployment, 2, push=False).ok
    opening = claim(stack, deployment, 2, CONTRIBUTORS[2])
    again = claim(stack, deployment, 2, CONTRIBUTORS[1])
    assert again.gas_used < 80_000 and opening.gas_used - again.gas_used > 15_000, (again.gas_used, opening.gas_used)


def test_epochs_close_once_and_in_order(stack, chain, deployment, tmp_path):
    with pytest.raises(epochs.EpochNotClosed, match="close epoch 1 before epoch 2"):
        setup_epoch(stack, chain, deployment, tmp_path, epoch_id=2)
    first = setup_epoch(stack, chain, deployment, tmp_path, extra_accounts=2)
    with pytest.raises(epochs.EpochConflict):
        setup_epoch(stack, chain, deployment, tmp_path, extra_accounts=3)
    second = setup_epoch(stack, chain, deployment, tmp_path, epoch_id=2, extra_accounts=2)
    assert second.total + second.carry_out == POOL + first.carry_out, "epoch 1's remainder carries into epoch 2"


def test_outbid_pending_intent_is_re_signed_at_the_same_nonce_and_paid_once(stack, chain, deployment, tmp_path):
    """Mining paused: the emitter dies with its fund tx pending, another tx outbids it at that nonce; the rerun
    re-signs with higher fees at the same nonce (never a second nonce), and only one of them is ever mined."""
    setup_epoch(stack, chain, deployment, tmp_path, extra_accounts=2)
    rpc = chain.w3.provider.make_request
    rpc("evm_setAutomine", [False])
    assert emit_killed(stack, deployment, 1, "fund:after_send", push=False) == -9
    (ours,) = pending_of(chain, OPERATOR.address).values()
    token = chain.contract(contracts.OPEN_TOKEN, deployment.token)
    rival_fee = int(int(ours["maxFeePerGas"], 16) * 1.15)
    rival = token.functions.approve(CONTRIBUTORS[2].address, 5).build_transaction({
        "from": OPERATOR.address, "chainId": chain.chain_id, "nonce": int(ours["nonce"], 16),
        "maxFeePerGas": rival_fee, "maxPriorityFeePerGas": rival_fee})
    chain.w3.eth.send_raw_transaction(OPERATOR.sign_transaction(rival).raw_transaction)

    child = emitter_processes().Process(target=emit_epoch, args=(stack, deployment, 1), kwargs={"push": False})
    child.start()
    deadline = time.monotonic() + 60
    while not any(int(tx["maxFeePerGas"], 16) > rival_fee for tx in pending_of(chain, OPERATOR.address).values()):
        assert time.monotonic() < deadline and child.is_alive(), "the rerun never outbid the rival"
        time.sleep(0.05)
    rpc("evm_mine", [])
    rpc("evm_setAutomine", [True])
    child.join(60)
    assert child.exitcode == 0

    fund_states = [e.record for e in outbox.read_epoch(stack.kafka_bootstrap, 1)
                   if e.type == schema.REWARD_TX_STATE.name and e.record["step"] == "fund"]
    intents = [s for s in fund_states if s["state"] == "intent"]
    assert len(intents) >= 2 and len({s["nonce"] for s in intents}) == 1, "bumps reuse the nonce"
    assert [s["state"] for s in fund_states].count("confirmed") == 1
    assert len(logs(chain, token, "Transfer", to=deployment.distributor)) == 1
    assert token.functions.allowance(OPERATOR.address, CONTRIBUTORS[2].address).call() == 0, \
        "the outbid rival was never mined"
    distributor = chain.contract(contracts.REWARD_DISTRIBUTOR, deployment.distributor)
    assert len(logs(chain, distributor, "EpochPublished")) == 1


def pending_of(chain: Chain, sender: str) -> dict:
    return chain.w3.provider.make_request("txpool_content", [])["result"]["pending"].get(sender.lower(), {})


def test_rpc_failures_are_retried_then_reported(monkeypatch):
    monkeypatch.setattr(txsteps.time, "sleep", lambda _: None)
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise requests.ConnectionError("connection refused")
        return "answer"

    assert txsteps.rpc(flaky) == "answer" and len(attempts) == 3

    def down() -> None:
        raise requests.ConnectionError("connection refused")

    with pytest.raises(txsteps.ChainUnavailable, match=f"after {txsteps.RPC_ATTEMPTS} attempts"):
        txsteps.rpc(down)
