"""Click parameter types for what the chain accepts: addresses, unsigned amounts and ids.

A value the contracts would reject, or web3 could not encode (a negative amount, 2**256, ``0xnot``),
is refused while the command line is parsed, with click's one-line usage error, before any key is
loaded or any RPC call made.
"""

from __future__ import annotations

import re

import click

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class AddressType(click.ParamType):
    """A 20-byte account address, ``0x`` + 40 hex digits; mixed case must be a valid EIP-55 checksum.

    Converts to the checksummed form. The zero address is refused: tokens sent there are burnt.
    """

    name = "address"

    def convert(self, value, param, ctx) -> str:
        text = str(value).strip()
        if not _ADDRESS.fullmatch(text):
            self.fail(f"{text!r} is not an address (0x followed by 40 hex digits)", param, ctx)
        from eth_utils import to_checksum_address

        checksummed = to_checksum_address(text)
        digits = text[2:]
        if digits != digits.lower() and digits != digits.upper() and text != checksummed:
            self.fail(f"{text!r} has a wrong EIP-55 checksum (mistyped?); expected {checksummed}", param, ctx)
        if int(digits, 16) == 0:
            self.fail("the zero address cannot hold or receive anything", param, ctx)
        return checksummed


class UIntType(click.ParamType):
    """A whole number that fits the contract's ``uint<bits>``, at least ``minimum`` (digits, ``_`` allowed)."""

    def __init__(self, bits: int = 256, minimum: int = 0, what: str = "amount"):
        self.bits, self.minimum, self.what = bits, minimum, what
        self.name = what

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            text = str(value).strip()
            if not re.fullmatch(r"-?[0-9][0-9_]*", text):
                self.fail(f"{text!r} is not a whole number (no decimals, units or exponents)", param, ctx)
            number = int(text)
        if number < self.minimum:
            self.fail(f"{self.what} must be at least {self.minimum}, got {number}", param, ctx)
        if number >= 2**self.bits:
            self.fail(f"{self.what} {number} does not fit the contract's uint{self.bits} (max {2**self.bits - 1})",
                      param, ctx)
        return number


ADDRESS = AddressType()
WEI = UIntType(256, 1, "amount in wei")
DATANET_ID = UIntType(256, 1, "datanet id")
