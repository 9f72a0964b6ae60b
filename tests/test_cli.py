"""The contributor's path through the real `payable` console script against a real anvil."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from payable import services
from payable.chain import Chain
from payable.keys import Role, dev_account
from tests.conftest import make_settings, stack_env

CONTRIBUTOR = dev_account(Role.CONTRIBUTOR.value).address
PAYABLE = str(Path(sys.executable).with_name("payable"))


def run(settings, *args: str, ok: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    env = os.environ | (env or {}) | stack_env(settings)
    result = subprocess.run([PAYABLE, *args], env=env, capture_output=True, text=True, timeout=120)
    assert (result.returncode == 0) == ok, result.stderr + result.stdout
    return result


@pytest.fixture(scope="module")
def cli_datanet(tmp_path_factory):
    """One stack for the module: contracts deployed and datanet 1 (max 64 bytes) created through the CLI."""
    settings = make_settings(tmp_path_factory.mktemp("cli") / "data")
    services.up(settings)
    try:
        run(settings, "deploy")
        created = json.loads(run(settings, "datanet", "create", "--name", "notes", "--max-size", "64").stdout)
        assert created["datanet_id"] == 1
        yield settings
    finally:
        services.down(settings)


def test_help_lists_every_command_with_a_line_of_help():
    result = subprocess.run([PAYABLE, "--help"], capture_output=True, text=True, check=True)
    for command in ("up", "down", "status", "deploy", "fund", "datanet", "contribute", "demo"):
        assert f"  {command} " in result.stdout


def test_status_reports_the_running_services(cli_datanet):
    out = run(cli_datanet, "status").stdout
    assert out.count("healthy") == 2


def test_contributor_submits_files_and_gets_ids_and_tx_hashes(cli_datanet, tmp_path):
    run(cli_datanet, "fund", CONTRIBUTOR, str(10 * 10**18))
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    files[0].write_text("the first contribution")
    files[1].write_text("a second, different one")
    lines = run(cli_datanet, "contribute", "--datanet", "1", *map(str, files)).stdout.splitlines()
    receipts = [json.loads(line) for line in lines]
    assert len({r["contribution_id"] for r in receipts}) == 2
    assert all(r["tx_hash"].startswith("0x") and len(r["tx_hash"]) == 66 for r in receipts)
    stored = cli_datanet.content_dir / receipts[0]["content_hash"][2:4] / receipts[0]["content_hash"][2:]
    assert stored.read_text() == "the first contribution"


@pytest.mark.parametrize("content, datanet, message", [
    (None, "1", "no such file"),
    ("", "1", "empty file"),
    ("x" * 65, "1", "over the datanet's limit of 64 bytes"),
    ("fine", "7", "unknown datanet 7"),
])
def test_bad_submissions_fail_before_any_transaction(cli_datanet, tmp_path, content, datanet, message):
    path = tmp_path / "c.txt"
    if content is not None:
        path.write_text(content)
    chain = Chain(cli_datanet.rpc_url)
    nonce_before = chain.w3.eth.get_transaction_count(CONTRIBUTOR)
    result = run(cli_datanet, "contribute", "--datanet", datanet, str(path), ok=False)
    assert message in result.stderr
    assert chain.w3.eth.get_transaction_count(CONTRIBUTOR) == nonce_before


def test_too_little_open_fails_before_any_transaction(cli_datanet, tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("fine")
    pauper = dev_account(9)
    env_key = {"PAYABLE_CONTRIBUTOR_KEY": pauper.key.hex()}
    result = run(cli_datanet, "contribute", "--datanet", "1", str(path), ok=False, env=env_key)
    assert "insufficient OPEN" in result.stderr and pauper.address in result.stderr
    assert Chain(cli_datanet.rpc_url).w3.eth.get_transaction_count(pauper.address) == 0
