"""Signing keys per role, from the environment or a keystore file, never from code or logs.

Roles follow least authority (invariant 6): the deployer deploys and holds the treasury; the rewards
operator alone publishes epochs; validators alone slash; contributors submit. For each role payable reads
``PAYABLE_<ROLE>_KEY`` (hex), else ``PAYABLE_<ROLE>_KEYSTORE`` (an encrypted JSON keystore) with
``PAYABLE_<ROLE>_KEYSTORE_PASSWORD``. Only against the embedded local chain, with neither set, it falls
back to the local node's public development accounts.
"""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

# The public mnemonic of anvil's (and hardhat's) development accounts. Worthless outside a dev node.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


class Role(Enum):
    DEPLOYER = 0
    OPERATOR = 1
    VALIDATOR = 2
    CONTRIBUTOR = 3


class MissingKeyError(RuntimeError):
    """No key is configured for a role on a non-local chain."""


def dev_account(index: int) -> LocalAccount:
    """Development account ``index`` of the local node (the same accounts anvil funds with ETH)."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def load_account(role: Role, *, local_chain: bool) -> LocalAccount:
    """The account that signs for ``role``; see the module docstring for where keys come from."""
    prefix = f"PAYABLE_{role.name}"
    key = os.environ.get(f"{prefix}_KEY")
    if key:
        return Account.from_key(key)
    keystore = os.environ.get(f"{prefix}_KEYSTORE")
    if keystore:
        password = os.environ.get(f"{prefix}_KEYSTORE_PASSWORD", "")
        encrypted = json.loads(Path(keystore).read_text())
        return Account.from_key(Account.decrypt(encrypted, password))
    if local_chain:
        return dev_account(role.value)
    raise MissingKeyError(f"no key for role {role.name.lower()}: set {prefix}_KEY or {prefix}_KEYSTORE")
