"""Per-answer attribution in the serving path: which training contributions most influenced an answer.

A request with ``attribution`` in its body (``{"k": 10}``) gets, with its last chunk, the top-k training
contributions of the adapter that answered, ranked by TracIn influence on the answer's own loss and read
from the adapter's gradient store (``pipelines.attribution.answers``): one gradient pass over the answer
and one vector search, never a pass over the training data. The same list goes into the usage event, so
the usage half of the loop sees which data an answer leaned on.

Refusals happen before generation starts: the base model alone or an ensemble has no single training run
to search, and an adapter without a gradient store (never attributed) would need a whole attribution run
inside a request, so it is refused with the command that builds the store.
"""

from __future__ import annotations

from payable.settings import Settings
from pipelines.attribution.answers import find_record, top_contributions
from pipelines.attribution.store import open_store
from pipelines.training.registry import AdapterRegistry
from serving.errors import ServingError


class AttributionUnavailable(ServingError):
    status = 409
    type = "invalid_request_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, param="attribution", code="attribution_unavailable")


class AnswerAttributor:
    """The data directory's gradient stores, searched for one answer at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check(self, adapter_ids: list[str]) -> str:
        """The one adapter an answer can be attributed to; refuses the base model, ensembles and storeless adapters."""
        if len(adapter_ids) != 1:
            what = "the base model alone" if not adapter_ids else f"an ensemble of {len(adapter_ids)} adapters"
            raise AttributionUnavailable(f"attribution needs a model served by one adapter, not {what}")
        (adapter_id,) = adapter_ids
        registry = AdapterRegistry(self.settings.adapters_dir)
        try:
            record = find_record(registry, adapter_id)
        except (LookupError, TypeError, ValueError):  # none, or not one the training stage wrote (no checkpoints)
            raise AttributionUnavailable(f"adapter {adapter_id} has no training lineage to attribute to") from None
        if open_store(registry, record) is None:
            raise AttributionUnavailable(f"adapter {adapter_id} has no gradient store yet: run "
                                         f"`payable attribute --datanet {record.datanet_id}` (TracIn writes it)")
        return adapter_id

    def top(self, adapter_id: str, prompt: str, completion: str, k: int) -> list[dict]:
        """The k most influential trained contributions, most influential first (``schemas.usage.INFLUENCE``)."""
        hits = top_contributions(self.settings, adapter_id, prompt, completion, k)
        return [{"rank": rank, "contribution_id": h.contribution_id, "score": h.score}
                for rank, h in enumerate(hits, start=1)]
