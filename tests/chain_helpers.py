"""Small helpers for tests that drive the local anvil node directly."""

from __future__ import annotations

from payable.chain import Chain


def mine(chain: Chain, blocks: int = 1) -> None:
    chain.w3.provider.make_request("anvil_mine", [hex(blocks)])


def advance_time(chain: Chain, seconds: int) -> None:
    chain.w3.provider.make_request("evm_increaseTime", [seconds])
    mine(chain)
