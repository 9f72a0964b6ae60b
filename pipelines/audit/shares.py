"""An account's epoch payout divided among the contributions that earned it: exact, deterministic, summing
to the paid amount to the token unit.

The split pays accounts (one Merkle leaf each), weighting an account's contributions by positive influence
(reputation is per account, so it does not change the division inside one account). The audit wants one row
per contribution, so the leaf amount is apportioned by largest remainder on exact fractions of those
influences; ties go to the lower contribution id. Pure: no I/O.
"""

from __future__ import annotations

from fractions import Fraction


def apportion(amount: int, weights: dict[int, float]) -> dict[int, int]:
    """contribution id -> its share of ``amount`` in proportion to max(weight, 0); zero weights get 0.

    Shares sum to ``amount`` whenever some weight is positive; with none positive every share is 0.
    """
    exact = {cid: Fraction(max(w, 0.0)) for cid, w in weights.items()}
    total = sum(exact.values(), Fraction(0))
    if total == 0:
        return dict.fromkeys(weights, 0)
    quotas = {cid: amount * w / total for cid, w in exact.items()}
    shares = {cid: int(q) for cid, q in quotas.items()}  # quotas are >= 0, so int() is floor
    left = amount - sum(shares.values())
    by_remainder = sorted(quotas, key=lambda cid: (-(quotas[cid] - shares[cid]), cid))
    for cid in by_remainder[:left]:
        shares[cid] += 1
    return shares
