"""`payable validate`: validate, deduplicate and materialize every chain fact not yet validated."""

from __future__ import annotations

import click

from payable.cli import Context, pass_context
from payable.cli.options import beam_options


@click.command()
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True), default=0.8, show_default=True,
              help="Jaccard similarity of normalized word shingles at or above which text is a near-duplicate.")
@click.option("--max-offsets", type=click.IntRange(min=1), default=50_000, show_default=True,
              help="Offsets per partition in one run (one Lance version per datanet per run).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes (Beam FnApiRunner multi-processing when > 1).")
@click.option("--pipeline-arg", "pipeline_args", multiple=True,
              help="Extra Beam pipeline option, e.g. --pipeline-arg=--runner=FlinkRunner (repeatable).")
@beam_options
@pass_context
def validate(ctx: Context, threshold: float, max_offsets: int, workers: int, pipeline_args: tuple[str, ...]) -> None:
    """Validate new chain facts: verdicts to Kafka, accepted rows to one Lance version per datanet."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from pipelines.validate.config import ValidateConfig
    from pipelines.validate.run import validate_new_offsets

    args = list(pipeline_args)
    if workers > 1:
        args += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    console = Console()
    with Progress(TextColumn("validating offsets"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("offsets", total=None)
        report = validate_new_offsets(
            ctx.settings, ValidateConfig(near_threshold=threshold), pipeline_args=args,
            max_offsets_per_run=max_offsets, progress=lambda done, total: progress.update(task, completed=done,
                                                                                           total=total))
    if not report.runs:
        console.print("nothing new to validate")
        return
    table = Table(title=f"validate: {len(report.runs)} run(s)" + (" (resumed a crashed run)" if report.resumed else ""))
    for column in ("datanet", "submitted", "accepted", "rejected by reason", "retracted later", "replayed",
                   "Lance version"):
        table.add_column(column)
    for datanet in sorted(report.datanets.values(), key=lambda r: r.datanet_id):
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(datanet.rejected.items())) or "-"
        version = "-" if datanet.lance_version is None else str(datanet.lance_version)
        table.add_row(f"dn-{datanet.datanet_id}", str(datanet.submitted), str(datanet.accepted), reasons,
                      str(datanet.retracted_after_acceptance), str(datanet.replayed), version)
    console.print(table)
    ranges = ", ".join(f"p{p}: {lo}..{hi}" for p, (lo, hi) in sorted(report.ranges.items()))
    console.print(f"offsets {ranges} · dead letters {report.dead_letters}")
