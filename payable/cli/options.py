"""Options shared by several stage commands, declared once so every command spells and applies them alike."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import replace

import click

from payable.cli import Context


def _set_beam_options(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        context = ctx.find_object(Context)
        context.settings = replace(context.settings, beam_options=tuple(shlex.split(value)))


def beam_options(command: Callable) -> Callable:
    """``--beam-options "..."``: the Beam pipeline options of every pipeline the command runs (the runner
    and its settings), instead of PAYABLE_BEAM_OPTIONS; applied to the command's Settings."""
    return click.option(
        "--beam-options", expose_value=False, callback=_set_beam_options, metavar="OPTIONS",
        help='Beam pipeline options, e.g. "--runner=pipelines.runners.dask.DaskRunner '
             '--dask_client_address=tcp://127.0.0.1:8786" (default: env PAYABLE_BEAM_OPTIONS; in-process).',
    )(command)
