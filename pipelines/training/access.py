"""Who may train on a datanet: the training stage's gate, decided from the log.

A public datanet is open to any trainer. A permissioned one is trained on only for the trainer key
(``Role.TRAINER``) while it holds a live grant on the log: an AccessGranted fact for that key not yet
followed by an AccessRevoked, neither retracted by a reorg. Reading the log (the truth), not contract
storage, means a replay decides the same way; the grant's chain event id goes into the adapter's lineage,
so the audit tables can say which adapter was trained under which grant.

:func:`train_granted` is the training stage's entry: ``payable train`` and the ``lora_adapters`` asset
both go through it, so the rule lives here once, and a refused trainer writes nothing.
"""

from __future__ import annotations

from payable.errors import PayableError
from payable.keys import Role, load_account
from payable.settings import Settings
from pipelines.log_views import LogView, access_grants, live_datanets, read_view
from pipelines.training.data import dataset_of
from pipelines.training.train import Trained, launch_arguments, train_latest
from schemas import topics


class AccessDenied(PayableError, PermissionError):
    """The trainer may not train on this datanet; the message (one line) says why and what would change it."""


def authorize(facts: LogView, datanet_id: int, trainer: str) -> str | None:
    """The event id of ``trainer``'s live grant on permissioned ``datanet_id``; ``None`` for a public datanet.

    Raises :class:`AccessDenied` when the datanet is not on the log, or is permissioned and ``trainer``
    holds no live grant (never granted, or revoked)."""
    created = live_datanets(facts).get(datanet_id)
    if created is None:
        raise AccessDenied(f"datanet {datanet_id} is not on the log (no DatanetCreated fact): ingest chain facts first")
    if not created["permissioned"]:
        return None
    trainer = trainer.lower()
    mine = [g for g in access_grants(facts) if g.datanet_id == datanet_id and g.builder == trainer]
    if mine and mine[-1].revoked is None:
        return mine[-1].granted["event_id"]
    if mine:
        raise AccessDenied(f"datanet {datanet_id} is permissioned and trainer {trainer}'s grant was revoked "
                           f"(block {mine[-1].revoked['block_number']}): ask its owner {created['owner']} again")
    raise AccessDenied(f"datanet {datanet_id} is permissioned and trainer {trainer} holds no grant: "
                       f"`payable datanet request-access --datanet {datanet_id}`, then its owner "
                       f"{created['owner']} grants it")


def trainer_grant(settings: Settings, datanet_id: int) -> str | None:
    """:func:`authorize` for the configured trainer key, against the chain-facts log as it stands."""
    trainer = load_account(Role.TRAINER, local_chain=settings.local_chain).address
    return authorize(read_view(settings.kafka_bootstrap, topics.CHAIN_FACTS), datanet_id, trainer)


def train_granted(settings: Settings, datanet_id: int, overrides: dict | None = None,
                  show_progress: bool = True) -> Trained:
    """For a trainer allowed on the datanet: the launch's arguments (``overrides`` over the datanet spec's
    defaults, its eval queries synced from the log), then :func:`~pipelines.training.train.train_latest` with the
    grant in the lineage. Raises :class:`AccessDenied` otherwise, before anything is written (no-op included);
    an unknown datanet fails first, without reading the log."""
    dataset_of(settings.lance_dir, datanet_id)
    grant = trainer_grant(settings, datanet_id)
    args = launch_arguments(settings, datanet_id, overrides)
    return train_latest(settings, datanet_id, args, show_progress=show_progress, access_grant=grant)
