"""payable's smart contracts: Solidity sources in ``src/``, compiled artifacts in ``artifacts/``.

The artifacts (ABI + bytecode) are committed, so running payable needs no Node; ``make contracts``
recompiles them with solc-js and a test fails when the committed ones drift from a fresh compile.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

ARTIFACTS_DIR = Path(__file__).parent / "artifacts"

OPEN_TOKEN = "OpenToken"
DATANET_REGISTRY = "DatanetRegistry"
REWARD_DISTRIBUTOR = "RewardDistributor"
TIMELOCK = "PayableTimelock"
GOVERNOR = "PayableGovernor"
ATTRIBUTION_REGISTRY = "AttributionRegistry"
PROTOCOL_PARAMETERS = "ProtocolParameters"
AGENT_REGISTRY = "AgentRegistry"


@cache
def artifact(name: str) -> dict:
    """The compiled artifact of contract ``name``: {"abi": [...], "bytecode": "0x..."}."""
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no compiled artifact for {name} at {path}: run `make contracts`")
    return json.loads(path.read_text())


def abi(name: str) -> list[dict]:
    return artifact(name)["abi"]
