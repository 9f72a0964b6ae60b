"""Typed settings for influence scoring (kronfluence's ``ScoreArguments`` in spirit)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

METHODS = ("datainf", "influence", "tracin", "trak")


@dataclass(frozen=True)
class HarmArguments:
    """When a negative score is evidence of harm rather than noise (``harm.py``), and how it is confirmed
    (``counterfactual.py``). A flag alone slashes nobody: the reward split slashes only what the refit confirms."""

    bootstrap_samples: int = 2000
    """Resamples of the eval queries for the interval of a contribution's mean score."""
    confidence: float = 0.95
    """Two-sided level of that interval; a flag needs the whole interval below zero."""
    min_queries: int = 5
    """Fewer eval queries (other than the contribution itself) than this: the interval means nothing, no flag."""
    checkpoint_weight: float = 0.25
    """A flag needs a negative term at every checkpoint that carries weight: at least this fraction of the largest
    term's magnitude (late checkpoints of a converging fit have tiny gradients whose sign is noise)."""
    outlier_z: float = 3.5
    """A flag needs the robust z-score (median / MAD of the datanet's scores) below ``-outlier_z``
    (Iglewicz and Hoaglin's cut-off for outliers)."""
    refit: bool = True
    """Refit the adapter without the flagged contributions to confirm them; without it nothing is confirmed."""
    spread_seeds: tuple[int, ...] = (1, 2)
    """Seeds of the extra full-data fits that measure the seed-to-seed spread of the eval loss (the adapter's own
    seed is the third); the refit must improve the eval loss by more than that spread."""

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), got {self.confidence}")
        if self.bootstrap_samples < 100 or self.min_queries < 2:
            raise ValueError("bootstrap_samples must be at least 100 and min_queries at least 2")
        if not self.spread_seeds:
            raise ValueError("spread_seeds needs at least one seed besides the adapter's")


@dataclass(frozen=True)
class QualityArguments:
    """How a run's quality figures are measured (``quality.py``): its LDS over retrained subsets."""

    lds_subsets: int = 8
    """Random training subsets the adapter is refitted on to measure the run's LDS (one LoRA fit each: the cost);
    0 leaves the LDS unmeasured. Under 3 a rank correlation means nothing, so 1 and 2 are refused."""
    subset_fraction: float = 0.5
    """Share of the training contributions in each subset (the LDS literature's 50%)."""
    seed: int = 0
    """Seeds which contributions each subset holds."""

    def __post_init__(self) -> None:
        if self.lds_subsets < 0 or self.lds_subsets in (1, 2):
            raise ValueError(f"lds_subsets must be 0 (unmeasured) or at least 3, got {self.lds_subsets}")
        if not 0 < self.subset_fraction < 1:
            raise ValueError(f"subset_fraction must be in (0, 1), got {self.subset_fraction}")


@dataclass(frozen=True)
class ScoreArguments:
    """How influence scores are computed and reported."""

    method: str = "tracin"
    """Default ``tracin``: best LDS and corrupted-contribution AUC on the bench's LoRA text datanet (``influence``
    wins LDS on the digits models but flags corrupted text contributions worse: AUC 0.79 vs 1.00, quick bench).
    ``datainf``: closed-form per-layer inverse Hessian from LoRA gradients (final adapter);
    ``tracin``: learning-rate-weighted gradient dot products summed over checkpoints;
    ``trak``: projected-gradient influence with a damped empirical gradient-Gram inverse, averaged over
    checkpoints;
    ``influence``: influence function at the final adapter with a damped true-Fisher (Gauss-Newton) inverse
    estimated from gradients at model-sampled targets, in the projected space."""
    projection_dim: int = 256
    """Random-projection width per layer: stored gradients are (examples x layers x this), whatever the model size.
    Layers with fewer parameters are kept exact."""
    damping: float = 0.1
    """Damping relative to the mean squared gradient norm (DataInf) or mean eigenvalue (TRAK, influence)."""
    fisher_samples: int = 1
    """``influence``: targets drawn from the model per example; each draw is one more gradient pass over the
    training set and lowers the noise of the Fisher estimate."""
    batch_size: int | None = None
    """Examples per gradient batch (one Beam element); None: as many as ``memory_budget_mb`` holds by the model's
    estimate (``sizing.py``: on SmolLM2-135M a few examples, on the tiny GPT-2 the cap of 32)."""
    memory_budget_mb: int = 2048
    """Memory one gradient batch may take beyond the loaded model, when ``batch_size`` is None (``sizing.py``)."""
    projector_cache_mb: int = 3072
    """Memory the run's generated projection blocks may keep (one 4-byte float per LoRA weight and column), so
    each block is drawn once per run rather than once per batch: SmolLM2-135M's 2.44M LoRA weights x 256 columns
    fit (2.4 GB); a larger model's blocks beyond it are drawn again for every batch."""
    seed: int = 0
    """Seeds the random projections."""
    top_queries: int = 3
    """Evidence: how many eval queries each contribution helped and hurt most are reported."""
    harm: HarmArguments = field(default_factory=HarmArguments)
    """When a contribution is flagged harmful and how the flag is confirmed."""
    quality: QualityArguments = field(default_factory=QualityArguments)
    """How the run's LDS is measured (its canary AUC needs no setting: ``canaries.py``)."""
    num_threads: int = 1
    """Torch threads of the gradient passes (one by default, as training: a shared machine)."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.fisher_samples < 1:
            raise ValueError(f"fisher_samples must be at least 1, got {self.fisher_samples}")
        if self.num_threads < 1 or self.projector_cache_mb < 0:
            raise ValueError(f"num_threads must be at least 1 and projector_cache_mb at least 0, got "
                             f"{self.num_threads} and {self.projector_cache_mb}")
        if (self.batch_size is not None and self.batch_size < 1) or self.memory_budget_mb < 1:
            raise ValueError(f"batch_size (None: sized to the budget) and memory_budget_mb must be at least 1, got "
                             f"{self.batch_size} and {self.memory_budget_mb}")

    def to_dict(self) -> dict:
        return asdict(self)
