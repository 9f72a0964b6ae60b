"""Audit commands: query the DuckDB audit database (analysts), reconcile it with the chain (operators)."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import click

from payable.cli import Context, fail, pass_context

db_option = click.option("--db", "db_path", type=click.Path(path_type=Path, dir_okay=False),
                         help="Database file (default <data-dir>/audit.duckdb).")

# A query may read the audit tables and nothing else: no files (COPY TO, read_csv, ATTACH), no extensions,
# and no SET that would give either back. The database file itself is opened read-only.
LOCKED_DOWN = {
    "enable_external_access": False,
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "lock_configuration": True,
}


@click.command()
@click.option("--sql", "query", help="Run one query and exit (default: an interactive SQL prompt).")
@click.option("--json", "as_json", is_flag=True, help="Rows as a JSON array of objects (amounts as strings).")
@click.option("--csv", "as_csv", is_flag=True, help="Rows as CSV with a header line.")
@click.option("--rebuild", is_flag=True, help="Rebuild the database from the log and Lance first.")
@db_option
@pass_context
def audit(ctx: Context, query: str | None, as_json: bool, as_csv: bool, rebuild: bool, db_path: Path | None) -> None:
    """Query the audit tables (read-only): every payout traced to its tx, epoch, scores, dataset and facts.

    The default database is rebuilt first when it is missing or when the log or the stored tables have
    moved past what it was built from, so an answer is never silently stale; a file given with ``--db`` is
    never overwritten unasked (it may be someone else's copy): its staleness is said instead.
    """
    import duckdb

    if as_json and as_csv:
        raise click.UsageError("--json and --csv exclude each other: choose one output format")
    fmt = "json" if as_json else "csv" if as_csv else "table"
    path = db_path or ctx.settings.audit_db
    reason = "--rebuild was given" if rebuild else "there was none" if not path.exists() else _stale(ctx, path)
    if reason is not None and db_path is not None and not rebuild and path.exists():
        click.secho(f"warning: {path} is stale: {reason}; `--rebuild` rebuilds it", fg="yellow", err=True)
        reason = None
    if reason is not None:
        from pipelines.audit.build import build_audit_db

        summary = build_audit_db(ctx.settings, path)
        click.echo(f"built {summary.path} because {reason}; " + ", ".join(f"{t} {n}" for t, n in summary.rows.items()),
                   err=True)
    con = duckdb.connect(str(path), read_only=True, config=LOCKED_DOWN)
    try:
        if query is not None:
            if not _run(con, query, fmt):
                sys.exit(1)
            return
        _prompt(con, fmt)
    finally:
        con.close()


@click.command()
@db_option
@click.option("--no-rebuild", is_flag=True, help="Check the database as it is, without rebuilding it first.")
@click.option("--json", "as_json", is_flag=True, help="Differences as JSON lines.")
@pass_context
def reconcile(ctx: Context, db_path: Path | None, no_rebuild: bool, as_json: bool) -> None:
    """Check the audit tables against the chain and invariant 5; exit 1 listing every difference."""
    from pipelines.audit.reconcile import reconcile as run_reconcile

    path = db_path or ctx.settings.audit_db
    if no_rebuild and not path.exists():
        fail(f"no audit database at {path}; run without --no-rebuild")
    differences = run_reconcile(ctx.settings, ctx.deployment(), db_path=path, rebuild=not no_rebuild)
    for difference in differences:
        click.echo(json.dumps(asdict(difference), default=str) if as_json else str(difference))
    if differences:
        fail(f"{len(differences)} difference(s) between {path} and the chain")
    click.echo(f"reconciled: {path} agrees with the chain")


def _stale(ctx: Context, path: Path) -> str | None:
    """Why the database must be rebuilt before answering, or None; a log that cannot be read is said."""
    from kafka.errors import KafkaError

    from pipelines.audit.build import stale_reason

    try:
        return stale_reason(ctx.settings, path)
    except KafkaError as exc:
        click.secho(f"warning: cannot reach the log at {ctx.settings.kafka_bootstrap} ({type(exc).__name__}) to "
                    f"check that {path} is current; answering from it as built", fg="yellow", err=True)
        return None


def _run(con, query: str, fmt: str) -> bool:
    """Runs ``query`` and prints its rows in ``fmt``; prints the error and returns False if it fails."""
    import duckdb

    try:
        cursor = con.execute(query)
    except duckdb.Error as exc:
        click.secho(f"error: {' '.join(str(exc).split())}", fg="red", err=True)
        return False
    if cursor.description is None:
        return True
    names = [d[0] for d in cursor.description]
    rows = cursor.fetchall()
    if fmt == "json":
        click.echo(json.dumps([dict(zip(names, map(_plain, row), strict=True)) for row in rows], indent=1))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        writer.writerows([[_plain(v) for v in row] for row in rows])
    else:
        click.echo(con.sql(query) if rows else f"(0 rows) {', '.join(names)}")
    return True


def _plain(value: object) -> object:
    """Exact, JSON-safe values: token amounts (DECIMAL) as digit strings, timestamps as ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _prompt(con, fmt: str) -> None:
    """A minimal SQL prompt: statements end with ';', ``.tables`` lists tables, ``.quit`` or EOF leaves."""
    click.echo("payable audit: SQL over the audit tables (read-only). End statements with ';', .tables, .quit",
               err=True)
    buffer = ""
    while True:
        try:
            line = input("audit> " if not buffer else "  ...> ")
        except EOFError:
            return
        if not buffer and line.strip() in (".quit", ".exit"):
            return
        if not buffer and line.strip() == ".tables":
            _run(con, "SELECT table_name, table_type FROM information_schema.tables ORDER BY 1", fmt)
            continue
        buffer += line + "\n"
        if buffer.rstrip().endswith(";"):
            _run(con, buffer, fmt)
            buffer = ""
