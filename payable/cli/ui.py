"""`payable ui`: the Dagster UI over the current data directory."""

from __future__ import annotations

import os
import shutil
import sys

import click

from payable.cli import Context, fail, pass_context
from payable.foreground import run_in_foreground


@click.command()
@click.option("--port", type=click.IntRange(1, 65535), default=3000, show_default=True)
@pass_context
def ui(ctx: Context, port: int) -> None:
    """Open the operators' UI: Dagster's webserver on 127.0.0.1:PORT over this data directory."""
    from orchestration.instance import prepare_home

    home = prepare_home(ctx.settings)
    dagster = shutil.which("dagster", path=os.path.dirname(sys.executable)) or shutil.which("dagster")
    if dagster is None:
        fail("the dagster command is not installed in this environment")
    os.environ["PAYABLE_DATA_DIR"] = str(ctx.settings.data_dir)
    click.echo(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={home}); Ctrl-C or SIGTERM to stop")
    # Not exec'd: dagster dev ignores SIGTERM when started in the background, and its code servers and run
    # workers may outlive it; run_in_foreground stops its whole process group (payable.foreground).
    code = run_in_foreground([dagster, "dev", "-m", "orchestration.definitions", "-h", "127.0.0.1", "-p", str(port)])
    click.get_current_context().exit(code)
