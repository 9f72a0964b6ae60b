"""Usage-half commands: attribute the RAG answers on the usage log to the sources they used."""

from __future__ import annotations

import json

import click

from payable.cli import Context, fail, pass_context
from payable.cli.options import beam_options


@click.command("attribute-usage")
@click.option("--method", default="factorial", show_default=True,
              help="Context-attribution method: factorial (the cheap default the usage rewards pay by), "
                   "contextcite or leave_one_out.")
@beam_options
@pass_context
def attribute_usage(ctx: Context, method: str) -> None:
    """Weigh each retrieved source of every RAG answer not yet attributed (a Beam pipeline over the usage log);
    the weights go to payable.usage.attribution, answers that cannot be rescored with their reason.

    Prints one JSON line: answers attributed and skipped by reason this run, and those decided before."""
    from pipelines.context_attribution.run import attribute_usage as run

    try:
        report = run(ctx.settings, method)
    except ValueError as exc:  # an unknown method
        fail(str(exc))
    click.echo(json.dumps({"method": report.method, "attributed": report.attributed,
                           "skipped": dict(sorted(report.skipped.items())), "already_decided": report.already_decided,
                           "forward_passes": report.forward_passes}))
