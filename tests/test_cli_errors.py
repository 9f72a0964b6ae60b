"""Bad input gets one clear line, never a traceback: one test per class of bad input, on a real stack.

Commands run in-process through click's CliRunner (the same ``main`` the console script calls) against
the module's real anvil and broker; the three reproductions from the issue also run as the installed
``payable`` script. Every refusal must exit 1 (a refusal) or 2 (a usage error), print exactly one
``error:`` line, and no traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from eth_account import Account

from payable import services
from payable.chain import Chain, ChainError
from payable.cli import main
from payable.keys import Role, dev_account
from tests import test_cli
from tests.conftest import stack_env
from tests.test_cli import CONTRIBUTOR, PAYABLE, run

cli_datanet = test_cli.cli_datanet  # the same module-scoped stack fixture: anvil, broker, datanet 1 (64 bytes)

DEPLOYER = dev_account(Role.DEPLOYER.value)
ADDRESS = CONTRIBUTOR
TEN_OPEN = str(10 * 10**18)


def env_of(settings, **extra: str) -> dict[str, str]:
    return {**stack_env(settings), "PAYABLE_CONTRIBUTOR_KEY": "", "PAYABLE_CONFIRMATIONS": "12", **extra}


def invoke(settings, *args: str, input: str | None = None, **env: str):
    return CliRunner().invoke(main, list(args), env=env_of(settings, **env), input=input)


def refused(settings, *args: str, code: int = 1, input: str | None = None, **env: str) -> str:
    """Runs a command that must be refused; returns its one error line."""
    result = invoke(settings, *args, input=input, **env)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{args} raised {result.exception!r}"
    assert "Traceback" not in result.output
    assert result.exit_code == code, result.output
    errors = [line for line in result.output.splitlines() if "error:" in line.lower()]
    assert len(errors) == 1, result.output
    return errors[0]


def test_the_reported_inputs_print_one_line_from_the_console_script(cli_datanet, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("a note")
    cases = [
        (["fund", "0xnotanaddress", "5"], {}, 2, "is not an address"),
        (["contribute", "--datanet", "1", str(note)], {"PAYABLE_CONTRIBUTOR_KEY": "0x1234"}, 1,
         "PAYABLE_CONTRIBUTOR_KEY is not a private key"),
        (["datanet", "create", "--name", "n", "--max-size", "0"], {}, 2, "size in bytes must be at least 1"),
    ]
    for args, env, code, message in cases:
        result = run(cli_datanet, *args, ok=False, env=env)
        assert result.returncode == code and message in result.stderr, result.stderr
        assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("args, message", [
    (["fund", "0xnotanaddress", "5"], "is not an address"),
    (["fund", "0x" + "ab" * 19, "5"], "is not an address"),
    (["fund", ADDRESS.swapcase().replace("0X", "0x"), "5"], "wrong EIP-55 checksum"),
    (["fund", "0x" + "0" * 40, "5"], "zero address"),
    (["datanet", "create", "--name", "n", "--validator", "validator-1"], "is not an address"),
    (["claim", "--epoch", "1", "--account", "0xbad"], "is not an address"),
])
def test_malformed_addresses_are_usage_errors(cli_datanet, args, message):
    assert message in refused(cli_datanet, *args, code=2)


def test_an_address_in_any_case_is_accepted_and_checksummed(cli_datanet):
    result = invoke(cli_datanet, "fund", ADDRESS.lower(), "1")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["to"] == ADDRESS


@pytest.mark.parametrize("args, message", [
    (["fund", "--", ADDRESS, "-5"], "at least 1"),
    (["fund", ADDRESS, "0"], "at least 1"),
    (["fund", ADDRESS, "5.5"], "not a whole number"),
    (["fund", ADDRESS, "1e18"], "not a whole number"),
    (["fund", ADDRESS, str(2**256)], "does not fit the contract's uint256"),
    (["datanet", "create", "--name", "n", "--max-size", "0"], "at least 1"),
    (["datanet", "create", "--name", "n", "--max-size", str(2**64)], "uint64"),
    (["datanet", "create", "--name", "n", "--min-stake", "-1"], "at least 0"),
    (["datanet", "create", "--name", "n", "--min-stake", str(2**128)], "uint128"),
    (["reward", "--epoch", "-1"], "epoch id must be at least 0"),
    (["claim", "--epoch", "0"], "epoch id must be at least 1"),
])
def test_bad_amounts_are_usage_errors(cli_datanet, args, message):
    assert message in refused(cli_datanet, *args, code=2)


@pytest.mark.parametrize("datanet", ["0", "-1", "one", str(2**256)])
def test_bad_datanet_ids_are_usage_errors(cli_datanet, tmp_path, datanet):
    note = tmp_path / "note.txt"
    note.write_text("a note")
    line = refused(cli_datanet, "contribute", "--datanet", datanet, str(note), code=2)
    assert "'--datanet'" in line and ("datanet id" in line or "whole number" in line), line


def test_bad_keys_are_one_line_naming_the_variable_and_never_echo_the_key(cli_datanet, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("a note")
    wrong_password = tmp_path / "wrong.json"
    wrong_password.write_text(json.dumps(Account.encrypt(dev_account(8).key, "right", kdf="pbkdf2",
                                                         iterations=2)))
    not_json = tmp_path / "not.json"
    not_json.write_text("{half")
    half_key = "0x" + "ab" * 31
    cases = [
        ({"PAYABLE_CONTRIBUTOR_KEY": "0x1234"}, "expected 64 hex digits"),
        ({"PAYABLE_CONTRIBUTOR_KEY": half_key}, "expected 64 hex digits"),
        ({"PAYABLE_CONTRIBUTOR_KEY": "0x" + "zz" * 32}, "expected 64 hex digits"),
        ({"PAYABLE_CONTRIBUTOR_KEY": "0x" + "00" * 32}, "not a valid secp256k1 private key"),
        ({"PAYABLE_CONTRIBUTOR_KEY": "0x" + "ff" * 32}, "not a valid secp256k1 private key"),
        ({"PAYABLE_CONTRIBUTOR_KEYSTORE": str(tmp_path / "missing.json")}, "no keystore file"),
        ({"PAYABLE_CONTRIBUTOR_KEYSTORE": str(tmp_path)}, "is a directory"),
        ({"PAYABLE_CONTRIBUTOR_KEYSTORE": str(not_json)}, "not a readable JSON keystore"),
        ({"PAYABLE_CONTRIBUTOR_KEYSTORE": str(wrong_password), "PAYABLE_CONTRIBUTOR_KEYSTORE_PASSWORD": "wrong"},
         "cannot decrypt"),
    ]
    for env, message in cases:
        line = refused(cli_datanet, "contribute", "--datanet", "1", str(note), **env)
        assert message in line and "PAYABLE_CONTRIBUTOR_KEY" in line, line
        assert half_key[2:] not in line


def test_a_missing_key_on_a_remote_chain_is_one_line(cli_datanet, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("a note")
    line = refused(cli_datanet, "contribute", "--datanet", "1", str(note), PAYABLE_RPC_URL=cli_datanet.rpc_url)
    assert "no key for role contributor" in line


def test_bad_paths_are_one_line(cli_datanet, tmp_path):
    assert "is a directory" in refused(cli_datanet, "contribute", "--datanet", "1", str(tmp_path))
    assert "no such file" in refused(cli_datanet, "contribute", "--datanet", "1", str(tmp_path / "gone.txt"))
    assert "is a directory" in refused(cli_datanet, "audit", "--db", str(tmp_path), "--sql", "select 1", code=2)


def test_bad_configuration_is_one_line(cli_datanet, tmp_path):
    assert "PAYABLE_ANVIL_PORT must be an integer" in refused(cli_datanet, "status", PAYABLE_ANVIL_PORT="80a")
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert "is a file" in refused(cli_datanet, "--data-dir", str(a_file), "status", code=2)
    assert "--workers" in refused(cli_datanet, "validate", "--workers", "0", code=2)
    assert "--threshold" in refused(cli_datanet, "validate", "--threshold", "1.5", code=2)


def test_a_kafka_failure_that_reaches_the_user_is_one_line(cli_datanet):
    """Narrow: the real broker takes a minute to give up bootstrapping, so the mapping is checked directly."""
    from kafka.errors import KafkaTimeoutError

    from payable.cli import user_error

    line = user_error(KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:9"), cli_datanet)
    assert line is not None and "\n" not in line
    assert line.startswith(f"the Kafka log at {cli_datanet.kafka_bootstrap} failed: KafkaTimeoutError")
    assert "payable up" in line and "KAFKA_BOOTSTRAP" in line
    assert user_error(KeyError("a bug"), cli_datanet) is None, "a bug keeps its traceback"


def test_an_undeployed_data_directory_is_one_line(cli_datanet, tmp_path):
    line = refused(cli_datanet, "fund", ADDRESS, "5", PAYABLE_DATA_DIR=str(tmp_path / "empty"))
    assert "no deployment at" in line and "payable deploy" in line


def test_a_chain_that_is_down_is_one_line_from_every_chain_command(cli_datanet, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("a note")
    down = {"PAYABLE_ANVIL_PORT": str(services.free_port())}
    for args in (["fund", ADDRESS, "5"], ["contribute", "--datanet", "1", str(note)], ["mine", "1"],
                 ["datanet", "create", "--name", "n"], ["govern", "status"]):
        line = refused(cli_datanet, *args, **down)
        assert "cannot reach the chain at http://127.0.0.1:" in line and "payable up" in line, line


def test_an_account_with_open_but_no_gas_is_told_so_before_paying_anything(cli_datanet, tmp_path):
    pauper = Account.create()
    assert invoke(cli_datanet, "fund", pauper.address, TEN_OPEN).exit_code == 0
    note = tmp_path / "note.txt"
    note.write_text("a note without gas money")
    line = refused(cli_datanet, "contribute", "--datanet", "1", str(note), PAYABLE_CONTRIBUTOR_KEY=pauper.key.hex())
    assert "too little ETH to pay for gas" in line and pauper.address in line
    assert Chain(cli_datanet.rpc_url).w3.eth.get_transaction_count(pauper.address) == 0


def test_a_stale_nonce_is_a_one_line_chain_error(cli_datanet):
    import contracts

    chain = Chain(cli_datanet.rpc_url)
    deployment = json.loads(cli_datanet.deployment_file.read_text())
    token = chain.contract(contracts.OPEN_TOKEN, deployment["token"])
    with pytest.raises(ChainError) as caught:
        chain.send(DEPLOYER, token.functions.transfer(ADDRESS, 1), nonce=0, label="transfer OPEN")
    message = str(caught.value)
    assert message.startswith("transfer OPEN: another transaction from") and "nonce" in message
    assert "\n" not in message


def test_audit_output_formats_exclude_each_other(cli_datanet):
    assert "--json and --csv exclude each other" in refused(cli_datanet, "audit", "--json", "--csv", "--sql",
                                                            "select 1", code=2)


def test_mine_is_for_the_local_chain_only(cli_datanet):
    head = Chain(cli_datanet.rpc_url).w3.eth.block_number
    result = invoke(cli_datanet, "mine", "3")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"mined": 3, "head": head + 3}
    assert "not in the range 1<=x<=100000" in refused(cli_datanet, "mine", "0", code=2)
    line = refused(cli_datanet, "mine", "3", PAYABLE_RPC_URL=cli_datanet.rpc_url)
    assert "local dev chain only" in line
    assert Chain(cli_datanet.rpc_url).w3.eth.block_number == head + 3


def test_ingest_says_what_waiting_events_need_and_mine_gives_it(cli_datanet, tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("a note to ingest")
    assert invoke(cli_datanet, "fund", CONTRIBUTOR, TEN_OPEN).exit_code == 0
    assert invoke(cli_datanet, "contribute", "--datanet", "1", str(note)).exit_code == 0
    first = invoke(cli_datanet, "ingest", "--until-head")
    assert first.exit_code == 0, first.output
    waiting = re.search(r"event\(s\) in blocks? [\d.]+ are not confirmed yet: they need (\d+) more block\(s\) "
                        r"\(confirmations 12\); on the local chain run `payable mine (\d+)`", first.stdout)
    assert waiting and waiting[1] == waiting[2], first.stdout
    needed = int(waiting[1])
    assert "ContributionSubmitted" not in first.stdout
    assert invoke(cli_datanet, "mine", str(needed)).exit_code == 0
    second = invoke(cli_datanet, "ingest", "--until-head")
    assert second.exit_code == 0 and "ContributionSubmitted 1" in second.stdout, second.output
    assert "not confirmed yet" not in second.stdout


def test_audit_rebuilds_a_database_the_log_has_moved_past(cli_datanet, tmp_path):
    count = "select count(*) as n from contributions"
    before = json.loads(invoke(cli_datanet, "audit", "--rebuild", "--json", "--sql", count).stdout)[0]["n"]
    current = invoke(cli_datanet, "audit", "--json", "--sql", count)
    assert "built" not in current.stderr and json.loads(current.stdout)[0]["n"] == before

    note = tmp_path / "note.txt"
    note.write_text("one more note for the audit")
    assert invoke(cli_datanet, "fund", CONTRIBUTOR, TEN_OPEN).exit_code == 0
    assert invoke(cli_datanet, "contribute", "--datanet", "1", str(note)).exit_code == 0
    assert invoke(cli_datanet, "mine", "12").exit_code == 0
    assert invoke(cli_datanet, "ingest", "--until-head").exit_code == 0
    given = invoke(cli_datanet, "audit", "--db", str(cli_datanet.audit_db), "--json", "--sql", count)
    assert "is stale: the log moved past it" in given.stderr, "a file given by name is not overwritten unasked"
    assert json.loads(given.stdout)[0]["n"] == before
    after = invoke(cli_datanet, "audit", "--json", "--sql", count)
    assert after.exit_code == 0, after.output
    assert "because the log moved past it" in after.stderr
    assert json.loads(after.stdout)[0]["n"] == before + 1


@pytest.mark.parametrize("statement", [
    "COPY (SELECT 1) TO '{dir}/out.csv'",
    "SELECT * FROM read_csv('{dir}/local.csv')",
    "SELECT * FROM '{dir}/local.csv'",
    "ATTACH '{dir}/other.duckdb'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
])
def test_audit_queries_cannot_touch_files_extensions_or_settings(cli_datanet, tmp_path, statement):
    (tmp_path / "local.csv").write_text("a\n1\n")
    query = statement.format(dir=tmp_path)
    line = refused(cli_datanet, "audit", "--sql", query)
    assert "disabled" in line or "locked" in line, line
    line = refused(cli_datanet, "audit", input=query + ";\n.quit\n", code=0)  # the prompt too
    assert "disabled" in line or "locked" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.csv"]


def test_the_readme_contributor_path_runs_as_written(tmp_path):
    """The README's block, line for line, in a fresh directory (its own ports and data dir via env)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split("The contributor's path", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("PAYABLE_") and name != "KAFKA_BOOTSTRAP"}
    env |= {"PATH": f"{Path(PAYABLE).parent}:{env.get('PATH', '/usr/bin:/bin')}",
            "PAYABLE_ANVIL_PORT": str(services.free_port()), "PAYABLE_KAFKA_PORT": str(services.free_port())}
    try:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                                capture_output=True, text=True, timeout=300)
    finally:
        subprocess.run(["payable", "down"], cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert any("are not confirmed yet" in line and "`payable mine 12`" in line for line in lines), result.stdout
    assert any("ContributionSubmitted 1" in line for line in lines), result.stdout


def test_mine_refuses_a_node_that_is_not_anvil():
    """Narrow: a stub JSON-RPC endpoint that says it is geth, as a node on the local port might."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    calls = []

    class Geth(BaseHTTPRequestHandler):
        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append(request["method"])
            body = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": "Geth/v1.14.0-stable"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Geth)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ChainError, match=r"needs the local anvil node; .* is Geth/v1.14.0-stable"):
            Chain(f"http://127.0.0.1:{server.server_port}").mine(1)
    finally:
        server.shutdown()
        server.server_close()
    assert calls == ["web3_clientVersion"], "nothing but the version question reached the node"
