"""GET /v1/models: the base model, every adapter of every datanet, and each datanet's ``dn-<id>`` alias."""

from __future__ import annotations

from fastapi import APIRouter, Request

from serving.engine import Engine
from serving.errors import ModelNotFound
from serving.protocol import ModelCard, ModelList

router = APIRouter()


def model_cards(engine: Engine) -> list[ModelCard]:
    base = engine.base
    cards = [ModelCard(id=base.name, created=int(engine.started), owned_by="payable", root=base.name, parent=None)]
    entries = engine.entries()
    for entry in entries:
        cards.append(ModelCard(id=entry.adapter_id, created=entry.created, owned_by=f"dn-{entry.datanet_id}",
                               root=entry.adapter_id, parent=base.name, datanet_id=entry.datanet_id,
                               dataset_version=entry.dataset_version))
    for datanet_id in sorted({e.datanet_id for e in entries}):
        latest = engine.latest(datanet_id)
        cards.append(ModelCard(id=f"dn-{datanet_id}", created=latest.created, owned_by=f"dn-{datanet_id}",
                               root=latest.adapter_id, parent=base.name, datanet_id=datanet_id,
                               dataset_version=latest.dataset_version))
    return cards


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    return ModelList(data=model_cards(request.app.state.engine))


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str, request: Request) -> ModelCard:
    card = next((c for c in model_cards(request.app.state.engine) if c.id == model), None)
    if card is None:
        raise ModelNotFound(model)
    return card
