"""The governed payout parameters, read from the ProtocolParameters contract at one block.

The pool an epoch pays, the harm rule a slash must pass and the reputation prior (and the usage terms) are
not the operator's to choose: the timelock owns them and only a Governor proposal changes them. The reward
cycle reads them here at the block an epoch closes (``epochs.close_epoch`` records them, with that block and
the contract's address, in the RewardEpochClosed marker), so whoever closes the epoch (CLI, Dagster, a
script) pays by the same values, and a replay or ``payable verify`` can check them against the chain.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import contracts
from payable.chain import Chain, Deployment
from pipelines.rewards.split import SplitRules

BPS = 10_000


class ParametersMissing(LookupError):
    """The deployment predates the ProtocolParameters contract: there is nothing governed to read."""


@dataclass(frozen=True)
class GovernedParams:
    """The ProtocolParameters' values at ``block`` (fields in the contract's ``Values`` order)."""

    epoch_pool: int
    usage_price_per_token: int
    usage_sources_bps: int
    usage_training_bps: int
    usage_trainer_bps: int
    refit_margin_bps: int
    require_refit: bool
    prior_accepted: int
    prior_rejected: int
    block: int = 0
    """The block they were read at (0: not read from chain, e.g. a unit test's fixed values)."""
    address: str = ""
    """The ProtocolParameters contract they were read from."""

    def pool_for(self, influence_runs: int) -> int:
        """The training pool an epoch paying ``influence_runs`` runs allots: the governed epochPool, or 0 for an
        epoch that pays usage only (the training pool is for new models)."""
        return self.epoch_pool if influence_runs else 0

    def split_rules(self, method: str | None = None) -> SplitRules:
        """The split's policy under these parameters (``method``: which influence method to pay on)."""
        return SplitRules(method=method, prior_accepted=self.prior_accepted, prior_rejected=self.prior_rejected,
                          refit_margin=self.refit_margin_bps / BPS, require_refit=self.require_refit)

    def to_json(self) -> str:
        """The canonical JSON recorded with an epoch (large integers as decimal strings)."""
        values = {k: str(v) if isinstance(v, int) and not isinstance(v, bool) else v
                  for k, v in dataclasses.asdict(self).items()}
        return json.dumps(values, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> GovernedParams:
        raw = json.loads(text)
        return cls(**{f.name: raw[f.name] if f.type in ("bool", "str") else int(raw[f.name])
                      for f in dataclasses.fields(cls)})


def governed_params(chain: Chain, deployment: Deployment, block: int | None = None) -> GovernedParams:
    """The governed parameters at ``block`` (default: the chain's head, read once so every value is of it)."""
    if not deployment.parameters:
        raise ParametersMissing("this deployment has no ProtocolParameters contract (it predates governed "
                                "parameters): redeploy with `payable deploy`")
    return read_params(chain, deployment.parameters, chain.w3.eth.block_number if block is None else block)


def read_params(chain: Chain, address: str, block: int) -> GovernedParams:
    """The values of the ProtocolParameters at ``address`` as of ``block`` (one ``all()`` call)."""
    values = chain.contract(contracts.PROTOCOL_PARAMETERS, address).functions.all().call(block_identifier=block)
    return GovernedParams(*values, block=block, address=address.lower())
