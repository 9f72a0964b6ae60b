"""The terms a served call is paid on: its price per token and how the fee splits. One place decides them.

They are governed parameters (the ProtocolParameters contract, owned by the timelock, changed only through a
Governor proposal). ``usage_terms`` reads them at the chain's head; an epoch close takes them from the same
``GovernedParams`` read as its pool (``terms_of``), so an epoch's usage is priced by the values of the block it
records. Nothing else reads the price or the split.

Who pays: a sponsor pool. The treasury funds the RewardDistributor with the epoch's pool plus the usage fees
of the epoch when the epoch is emitted; callers are not charged per request (yet).
"""

from __future__ import annotations

from dataclasses import dataclass

from payable.chain import Chain, Deployment
from payable.settings import Settings
from pipelines.rewards.params import BPS, GovernedParams, governed_params


@dataclass(frozen=True)
class UsageTerms:
    """Price of one token, and the fee's split in basis points (summing to 10,000)."""

    price_per_token_wei: int
    sources_bps: int
    training_bps: int
    trainer_bps: int

    def __post_init__(self) -> None:
        parts = (self.sources_bps, self.training_bps, self.trainer_bps)
        if self.price_per_token_wei < 0 or min(parts) < 0 or sum(parts) != BPS:
            raise ValueError(f"usage terms need a price >= 0 and shares >= 0 summing to {BPS} bps, got "
                             f"price {self.price_per_token_wei}, shares {parts}")

    def fee(self, prompt_tokens: int, completion_tokens: int) -> int:
        """What one served call costs: every token it read or wrote, at the price per token."""
        return (prompt_tokens + completion_tokens) * self.price_per_token_wei


def terms_of(governed: GovernedParams) -> UsageTerms:
    """The usage terms among the governed parameters."""
    return UsageTerms(governed.usage_price_per_token, governed.usage_sources_bps, governed.usage_training_bps,
                      governed.usage_trainer_bps)


def usage_terms(settings: Settings, deployment: Deployment) -> UsageTerms:
    """The terms in force: the governed parameters at the chain's head."""
    return terms_of(governed_params(Chain(settings.rpc_url), deployment))
