"""Signing keys per role, from the environment or a keystore file, never from code or logs.

Roles follow least authority (invariant 6): the deployer deploys and holds the supply outside the treasury
(the treasury is the governance timelock); the rewards operator alone publishes epochs and funds them, within
the allowance governance gave it; validators alone slash; contributors submit; the trainer (a model
builder) requests access to permissioned datanets, trains only where it holds a grant, and alone publishes
the model and influence commitments (the AttributionRegistry's attribution operator); a serving agent (a
``payable serve`` instance) signs the usage events it reports and stakes OPEN under its address in the
AgentRegistry (``payable serve --agent-key-file`` names a file holding its key instead). For each role
payable reads ``PAYABLE_<ROLE>_KEY`` (hex), else ``PAYABLE_<ROLE>_KEYSTORE`` (an encrypted JSON keystore)
with ``PAYABLE_<ROLE>_KEYSTORE_PASSWORD``. Only against the embedded local chain, with neither set, it falls
back to the local node's public development accounts.

A key that cannot be used is a ``KeyConfigError`` naming the variable to fix; its message never contains
the key material itself (a half-pasted key in an error line is still a leaked key).
"""

from __future__ import annotations

import json
import os
import re
from enum import Enum
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from payable.errors import PayableError

# The public mnemonic of anvil's (and hardhat's) development accounts. Worthless outside a dev node.
DEV_MNEMONIC = "test test test test test test test test test test test junk"

# Order of the secp256k1 group: a private key is an integer in [1, N).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HEX_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")


class Role(Enum):
    DEPLOYER = 0
    OPERATOR = 1
    VALIDATOR = 2
    CONTRIBUTOR = 3
    TRAINER = 9  # the dev account index: not one of the demo's contributors (3-8)
    AGENT = 10   # beyond anvil's ten funded accounts: whoever registers it sends it gas money first


class KeyConfigError(PayableError, ValueError):
    """A role's key is missing, malformed, or its keystore cannot be read or decrypted."""


# Kept as a name of its own: callers catch "no key configured" separately from "key unusable".
class MissingKeyError(KeyConfigError):
    """No key is configured for a role on a non-local chain."""


def dev_account(index: int) -> LocalAccount:
    """Development account ``index`` of the local node (the same accounts anvil funds with ETH)."""
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def parse_private_key(text: str, source: str) -> bytes:
    """The 32 bytes of a hex private key (``0x`` optional), or a KeyConfigError naming ``source``."""
    text = text.strip()
    if not _HEX_KEY.fullmatch(text):
        digits = len(text.removeprefix("0x"))
        raise KeyConfigError(f"{source} is not a private key: expected 64 hex digits (0x optional), got {digits} "
                             "characters")
    key = bytes.fromhex(text.removeprefix("0x"))
    if not 0 < int.from_bytes(key, "big") < SECP256K1_N:
        raise KeyConfigError(f"{source} is not a valid secp256k1 private key (zero or above the curve order)")
    return key


def _from_keystore(path: str, password: str, source: str) -> LocalAccount:
    try:
        encrypted = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise KeyConfigError(f"{source}: no keystore file at {path}") from None
    except IsADirectoryError:
        raise KeyConfigError(f"{source}: {path} is a directory, not a keystore file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyConfigError(f"{source}: {path} is not a readable JSON keystore ({type(exc).__name__})") from None
    try:
        return Account.from_key(Account.decrypt(encrypted, password))
    except ValueError as exc:  # wrong password ("MAC mismatch") or an unknown keystore layout
        raise KeyConfigError(f"{source}: cannot decrypt {path}: {exc} (check {source}_PASSWORD)") from None
    except (KeyError, TypeError):
        raise KeyConfigError(f"{source}: {path} is not an Ethereum JSON keystore") from None


def load_key_file(role: Role, path: Path) -> LocalAccount:
    """The account in a key file: a hex private key, or an encrypted JSON keystore (its password from
    ``PAYABLE_<ROLE>_KEYSTORE_PASSWORD``)."""
    source = f"the {role.name.lower()} key file"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyConfigError(f"{source}: cannot read {path} ({type(exc).__name__})") from None
    if text.lstrip().startswith("{"):
        prefix = f"PAYABLE_{role.name}_KEYSTORE"
        return _from_keystore(str(path), os.environ.get(f"{prefix}_PASSWORD", ""), prefix)
    return Account.from_key(parse_private_key(text, f"{source} {path}"))


def load_account(role: Role, *, local_chain: bool) -> LocalAccount:
    """The account that signs for ``role``; see the module docstring for where keys come from."""
    prefix = f"PAYABLE_{role.name}"
    key = os.environ.get(f"{prefix}_KEY")
    if key:
        return Account.from_key(parse_private_key(key, f"{prefix}_KEY"))
    keystore = os.environ.get(f"{prefix}_KEYSTORE")
    if keystore:
        return _from_keystore(keystore, os.environ.get(f"{prefix}_KEYSTORE_PASSWORD", ""), f"{prefix}_KEYSTORE")
    if local_chain:
        return dev_account(role.value)
    raise MissingKeyError(f"no key for role {role.name.lower()}: set {prefix}_KEY or {prefix}_KEYSTORE")
