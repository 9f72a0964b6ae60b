"""Model and attribution commitments on-chain, and the verification of a contribution's chain of evidence.

``records`` encodes what is committed (pure), ``trees`` the Merkle trees over dataset and score rows (pure),
``sources`` reads them from the training and attribution stages' outputs, ``log`` is the commitments topic,
``publisher`` puts them on-chain exactly once (the rewards emitter's outbox discipline), ``verify`` walks one
contribution from its chain event to its payout.
"""
