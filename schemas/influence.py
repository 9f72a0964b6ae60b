"""The influence table (Lance, ``<lance_dir>/influence.lance``): Proof of Attribution's output.

One row per accepted contribution per (datanet, dataset version, adapter, method), written by
``pipelines.attribution``, read by the reward split and the audit.
"""

from __future__ import annotations

import pyarrow as pa

_EVIDENCE = pa.list_(pa.struct([pa.field("query_id", pa.string()), pa.field("score", pa.float64())]))

INFLUENCE = pa.schema([
    pa.field("contribution_id", pa.int64(), nullable=False),
    pa.field("contributor", pa.string(), nullable=False),
    pa.field("datanet_id", pa.int64(), nullable=False),
    pa.field("dataset_version", pa.int64(), nullable=False),
    pa.field("adapter_id", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("content_hash", pa.string(), nullable=False),
    pa.field("score", pa.float64(), nullable=False),
    pa.field("rank", pa.int32(), nullable=False),
    pa.field("copies", pa.int32(), nullable=False),
    pa.field("trained", pa.bool_(), nullable=False),
    pa.field("harmful", pa.bool_(), nullable=False),
    pa.field("helped_queries", _EVIDENCE, nullable=False),
    pa.field("hurt_queries", _EVIDENCE, nullable=False),
    # the harm evidence (pipelines.attribution.harm, .counterfactual)
    pa.field("score_low", pa.float64(), nullable=False),
    pa.field("score_high", pa.float64(), nullable=False),
    pa.field("checkpoint_scores", pa.list_(pa.float64()), nullable=False),
    pa.field("robust_z", pa.float64(), nullable=False),
    pa.field("refit_delta", pa.float64(), nullable=True),
    pa.field("refit_spread", pa.float64(), nullable=True),
    # the run's quality figures (pipelines.attribution.quality), the same on every row of a run; added in the
    # second version of the table: older tables get nulls (unmeasured) when next written
    pa.field("lds", pa.float64(), nullable=True),
    pa.field("lds_subsets", pa.int32(), nullable=True),
    pa.field("canary_commitment", pa.string(), nullable=True),
    pa.field("canary", pa.bool_(), nullable=True),
    pa.field("canary_auc", pa.float64(), nullable=True),
])
"""``score`` > 0: the contribution lowered the mean eval loss. ``copies``: identical contributions sharing one
copy's credit. ``trained``: false for contributions held out as eval queries (scored as if added).
``score_low``/``score_high``: bootstrap interval of ``score`` over the eval queries; ``checkpoint_scores``: its
terms per checkpoint; ``robust_z``: its median/MAD z-score within the run. ``harmful``: flagged (interval below
zero, negative at every checkpoint, a low outlier): earns nothing, and is slashed only when the counterfactual
refit confirms it. ``refit_delta``: eval-loss improvement of the refit without the run's flagged trained
contributions; ``refit_spread``: seed-to-seed range of the full-data eval loss (both null when not refitted).
``lds``: the run's linear datamodeling score over ``lds_subsets`` retrained subsets (null: unmeasured);
``canary_commitment``: the CanariesCommitted commitment in force for the datanet when the run was scored
(null: none); ``canary``: the contribution is a revealed canary of that commitment (null until revealed);
``canary_auc``: ROC AUC of the run's harm ranking on those canaries (null until a matching reveal)."""
QUALITY_COLUMNS = ("lds", "lds_subsets", "canary_commitment", "canary", "canary_auc")
