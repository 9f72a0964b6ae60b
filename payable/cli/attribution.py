"""Proof-of-attribution commands: train a datanet's LoRA adapter, score every contribution's influence."""

from __future__ import annotations

import json

import click

from payable.cli import Context, fail, pass_context
from payable.cli.options import beam_options


@click.command()
@click.option("--datanet", "datanet_id", type=int, required=True, help="Datanet id.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds LoRA init and batch order.")
@click.option("--epochs", type=int, default=5, show_default=True)
@pass_context
def train(ctx: Context, datanet_id: int, seed: int, epochs: int) -> None:
    """Fine-tune a LoRA adapter on the datanet's latest dataset version (a no-op when nothing changed)."""
    from pipelines.training.access import train_granted
    from pipelines.training.arguments import TrainingArguments

    try:
        record = train_granted(ctx.settings, datanet_id, TrainingArguments(seed=seed, epochs=epochs))
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if record is None:
        click.echo(json.dumps({"datanet_id": datanet_id, "trained": False, "reason": "dataset unchanged"}))
        return
    click.echo(json.dumps({"datanet_id": datanet_id, "trained": True, "adapter_id": record.adapter_id,
                           "dataset_version": record.dataset_version, "metrics": record.metrics}))


@click.command()
@click.option("--datanet", "datanet_id", type=int, required=True, help="Datanet id.")
@click.option("--adapter", "adapter_id", default=None, help="Adapter id (default: the datanet's latest).")
@click.option("--method", default=None,
              help="Influence method: tracin, datainf, trak or influence (default: tracin).")
@click.option("--beam/--in-process", "use_beam", default=False, show_default=True,
              help="Score as a Beam pipeline (batches of examples) instead of in one process.")
@beam_options
@pass_context
def attribute(ctx: Context, datanet_id: int, adapter_id: str | None, method: str | None, use_beam: bool) -> None:
    """Score every accepted contribution's influence on the adapter's eval loss; writes the influence table.

    One JSON line per contribution, best first, with the harm evidence (interval, robust z, refit delta and the
    seed spread it must beat); a datanet that cannot be scored fails with the reason."""
    from dataclasses import replace

    from pipelines.attribution import ScoreArguments
    from pipelines.attribution import attribute as score

    try:
        args = ScoreArguments() if method is None else replace(ScoreArguments(), method=method)
        table = score(ctx.settings, datanet_id, adapter_id, args, use_beam=use_beam).table
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    columns = ["contribution_id", "contributor", "score", "rank", "harmful", "score_low", "score_high", "robust_z",
               "refit_delta", "refit_spread"]
    for row in table.sort_by("rank").select(columns).to_pylist():
        click.echo(json.dumps(row, allow_nan=False))
