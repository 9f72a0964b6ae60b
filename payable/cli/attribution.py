"""Proof-of-attribution commands: train a datanet's LoRA adapter, score every contribution's influence."""

from __future__ import annotations

import json

import click

from payable.cli import Context, fail, pass_context
from payable.cli.options import beam_options


def _setting(flag: str, kind, text: str):
    """An option of a training setting: unset means the datanet spec's default, else the built-in one."""
    return click.option(flag, type=kind, default=None, help=f"{text} (default: the datanet's spec, else built-in)")


@click.command()
@click.option("--datanet", "datanet_id", type=int, required=True, help="Datanet id.")
@_setting("--base", str, "Base model: tiny-gpt2, smollm2-135m-instruct, a Hugging Face model dir or a .gguf file")
@_setting("--seed", int, "Seeds LoRA init, dropout and batch order; built-in 0")
@_setting("--epochs", click.IntRange(min=1), "Passes over the training rows; built-in 5")
@_setting("--lora-r", click.IntRange(min=1), "LoRA rank; built-in 8")
@_setting("--lora-alpha", click.IntRange(min=1), "LoRA alpha; built-in 16")
@_setting("--lora-dropout", click.FloatRange(0.0, 1.0, max_open=True), "LoRA dropout while training; built-in 0")
@_setting("--target-modules", str, "Comma-separated modules to adapt; built-in: the architecture's")
@_setting("--learning-rate", click.FloatRange(min=0.0, min_open=True), "Adam learning rate; built-in 0.01")
@_setting("--batch-size", click.IntRange(min=1), "Examples per step; built-in 8")
@_setting("--max-length", click.IntRange(min=2), "Tokens per example; built-in 64")
@_setting("--quantization", click.Choice(["none", "4bit"]), "4bit = QLoRA (CUDA only); built-in none")
@_setting("--num-checkpoints", click.IntRange(min=1), "Snapshots kept for attribution; built-in 3")
@_setting("--threads", click.IntRange(min=1), "Torch threads; built-in 1 (its core count on a machine of its own)")
@pass_context
def train(ctx: Context, datanet_id: int, base: str | None, target_modules: str | None, threads: int | None,
          **settings) -> None:
    """Fine-tune a LoRA adapter on the datanet's latest dataset version (a no-op when nothing changed)."""
    from pipelines.training import AdapterRegistry
    from pipelines.training.access import train_granted

    overrides = {**settings, "base_model": base, "num_threads": threads,
                 "target_modules": target_modules and [m.strip() for m in target_modules.split(",") if m.strip()]}
    try:
        record, trained_now = train_granted(ctx.settings, datanet_id, overrides)
    except (FileNotFoundError, LookupError, ValueError) as exc:
        fail(str(exc))
    if not trained_now:
        click.echo(json.dumps({"datanet_id": datanet_id, "trained": False, "reason": "dataset unchanged"}))
        return
    click.echo(json.dumps({"datanet_id": datanet_id, "trained": True, "adapter_id": record.adapter_id,
                           "base_model": record.base_model["name"], "dataset_version": record.dataset_version,
                           "metrics": record.metrics,
                           "seconds": AdapterRegistry(ctx.settings.adapters_dir).timing(record)}))


@click.command()
@click.option("--datanet", "datanet_id", type=int, required=True, help="Datanet id.")
@click.option("--adapter", "adapter_id", default=None, help="Adapter id (default: the datanet's latest).")
@click.option("--method", default=None,
              help="Influence method: tracin, datainf, trak or influence (default: tracin).")
@click.option("--beam/--in-process", "use_beam", default=False, show_default=True,
              help="Score as a Beam pipeline (batches of examples) instead of in one process.")
@click.option("--lds-subsets", type=click.IntRange(min=0), default=None,
              help="Retrained subsets behind the run's LDS, one LoRA fit each; 0 = unmeasured (default: 8).")
@click.option("--gradient-batch", "batch_size", type=click.IntRange(min=1), default=None,
              help="Examples per gradient batch (default: as many as --memory-budget-mb holds on this model).")
@click.option("--memory-budget-mb", type=click.IntRange(min=1), default=None,
              help="Memory one gradient batch may take beyond the model, in MB (default: 2048).")
@click.option("--threads", "num_threads", type=click.IntRange(min=1), default=None,
              help="Torch threads of the gradient passes (default: 1).")
@beam_options
@pass_context
def attribute(ctx: Context, datanet_id: int, adapter_id: str | None, method: str | None, use_beam: bool,
              lds_subsets: int | None, batch_size: int | None, memory_budget_mb: int | None,
              num_threads: int | None) -> None:
    """Score every accepted contribution's influence on the adapter's eval loss; writes the influence table.

    One JSON line per contribution, best first, with the harm evidence (interval, robust z, refit delta and the
    seed spread it must beat); the run's quality (LDS, canary AUC or why it is unmeasured) and the training
    gradients it recomputed or reused from the gradient store, and why, on stderr; a datanet that cannot be
    scored fails with the reason."""
    from dataclasses import replace

    from pipelines.attribution import ScoreArguments
    from pipelines.attribution import attribute as score

    try:
        args = ScoreArguments() if method is None else replace(ScoreArguments(), method=method)
        if lds_subsets is not None:
            args = replace(args, quality=replace(args.quality, lds_subsets=lds_subsets))
        args = replace(args, batch_size=batch_size, memory_budget_mb=memory_budget_mb or args.memory_budget_mb,
                       num_threads=num_threads or args.num_threads)
        result = score(ctx.settings, datanet_id, adapter_id, args, use_beam=use_beam, canaries_from_log=True)
    except (LookupError, ValueError) as exc:
        fail(str(exc))
    columns = ["contribution_id", "contributor", "score", "rank", "harmful", "score_low", "score_high", "robust_z",
               "refit_delta", "refit_spread"]
    for row in result.table.sort_by("rank").select(columns).to_pylist():
        click.echo(json.dumps(row, allow_nan=False))
    auc = result.table["canary_auc"][0].as_py() if result.table.num_rows else None
    lds = "unmeasured" if result.lds.value != result.lds.value else f"{result.lds.value:.3f}"
    click.echo(f"quality: LDS {lds} over {result.lds.subsets} retrained subsets ({result.lds.seconds:.1f} s); "
               f"canary AUC {result.canaries.describe(auc)}", err=True)
    click.echo(f"gradients: {result.gradients.describe()}", err=True)
    click.echo(f"gradient batch: {result.batch.describe()}", err=True)


@click.group()
def canaries() -> None:
    """Plant known-bad canary contributions (ids committed on the log), reveal them after the run."""


@canaries.command()
@click.option("--datanet", "datanet_id", type=int, required=True, help="Datanet id.")
@click.option("--count", type=click.IntRange(min=1), default=3, show_default=True, help="Canaries to plant.")
@pass_context
def plant(ctx: Context, datanet_id: int, count: int) -> None:
    """Submit COUNT garbage texts through the chain (the attribution operator's key, staked) and commit their ids;
    the salt and ids stay in a private file until `payable canaries reveal`."""
    from payable.keys import Role, load_account
    from pipelines.attribution import canaries as canary

    planted = canary.plant(ctx.settings, datanet_id, count,
                           load_account(Role.TRAINER, local_chain=ctx.settings.local_chain))
    click.echo(json.dumps({"datanet_id": datanet_id, "commitment": planted.commitment, "count": count,
                           "secret": str(planted.secret)}))


@canaries.command()
@click.option("--datanet", "datanet_id", type=int, required=True, help="Datanet id.")
@click.option("--salt", default=None, help="The commitment's salt (default: from the secret file plant wrote).")
@click.option("--ids", default=None, help="Comma-separated canary contribution ids (with --salt).")
@pass_context
def reveal(ctx: Context, datanet_id: int, salt: str | None, ids: str | None) -> None:
    """Reveal the datanet's canaries: checked against the commitment on the log (a mismatch is refused), then
    each run scored under it gets its canary AUC. One JSON line per run."""
    from pipelines.attribution import canaries as canary

    if (salt is None) != (ids is None):
        fail("give both --salt and --ids, or neither (to read the secret file)")
    if salt is None:
        state = canary.for_datanet(ctx.settings.kafka_bootstrap, datanet_id)
        if state.in_force is None:
            fail(f"datanet {datanet_id} has no canary commitment on the log: nothing to reveal")
        salt, ids_list = canary.read_secret(ctx.settings.data_dir, datanet_id, state.in_force)
    else:
        try:
            ids_list = [int(part) for part in ids.split(",") if part.strip()]
        except ValueError:
            fail(f"--ids must be comma-separated integers, got {ids!r}")
    revealed = canary.reveal_and_score(ctx.settings, datanet_id, salt, ids_list)
    for (datanet, version, adapter, method), auc in sorted(revealed.aucs.items()):
        click.echo(json.dumps({"run": f"{datanet}:{version}:{adapter}:{method}", "commitment": revealed.commitment,
                               "canaries": list(revealed.contribution_ids), "canary_auc": auc}))
    if not revealed.aucs:
        click.echo(json.dumps({"commitment": revealed.commitment, "canaries": list(revealed.contribution_ids),
                               "canary_auc": None, "detail": "no influence run was scored under this commitment"}))
