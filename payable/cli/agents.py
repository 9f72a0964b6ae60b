"""`payable agents`: a serving agent stakes (register) and leaves (unstake); a validator checks its reports (verify)
and, with ``--slash``, takes its stake naming the evidence."""

from __future__ import annotations

import json
from pathlib import Path

import click

from payable.cli import Context, fail, pass_context
from payable.cli.params import ADDRESS, WEI

TINY_CONTEXT = 128  # the tiny base model's n_positions (pipelines.training.arguments.BaseModelSpec)


def _agent_account(ctx: Context, key_file: Path | None):
    from payable.keys import Role, load_account, load_key_file

    return load_key_file(Role.AGENT, key_file) if key_file else load_account(Role.AGENT,
                                                                             local_chain=ctx.settings.local_chain)


KEY_FILE = click.option("--agent-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                        help="The agent's key file (as `payable serve --agent-key-file`); default PAYABLE_AGENT_KEY.")


@click.group()
def agents() -> None:
    """Serving agents: stake OPEN to have served usage paid; validators verify and slash."""


@agents.command("register")
@click.option("--endpoint", required=True, help="Where the agent serves (its `payable serve` URL).")
@click.option("--stake", type=WEI, help="OPEN wei to lock (default: the registry's minimum).")
@KEY_FILE
@pass_context
def register(ctx: Context, endpoint: str, stake: int | None, agent_key_file: Path | None) -> None:
    """Lock OPEN under the agent key's address, so the pipeline pays the usage it signs."""
    from payable.agents import register_agent

    click.echo(json.dumps(register_agent(ctx.chain(), ctx.deployment(), _agent_account(ctx, agent_key_file),
                                         endpoint, stake)))


@agents.command("unstake")
@KEY_FILE
@pass_context
def unstake(ctx: Context, agent_key_file: Path | None) -> None:
    """Delist the agent now (its usage is no longer paid); the stake stays slashable for the unstake delay."""
    from payable.agents import unstake_agent

    click.echo(json.dumps(unstake_agent(ctx.chain(), ctx.deployment(), _agent_account(ctx, agent_key_file))))


@agents.command("verify")
@click.argument("agent", type=ADDRESS)
@click.option("--context-tokens", type=click.IntRange(1), default=TINY_CONTEXT, show_default=True,
              help="The base model's context: more prompt plus completion tokens in one call is a finding.")
@click.option("--slash", is_flag=True, help="On any finding, slash the agent with the validator key.")
@click.option("--amount", type=WEI, help="OPEN wei to slash (default: the agent's whole stake).")
@pass_context
def verify(ctx: Context, agent: str, context_tokens: int, slash: bool, amount: int | None) -> None:
    """Check the usage AGENT signed against the log and the dataset versions it cites; prints each finding and
    exits 1 if there is any (after slashing, with --slash)."""
    from payable.agents import slash_agent
    from payable.keys import Role, load_account
    from pipelines.rewards.agent_checks import save_evidence, verify_agent

    evidence = verify_agent(ctx.settings, agent, context_tokens)
    for finding in evidence.findings:
        click.echo(json.dumps({"usage_event_id": finding.usage_event_id, "check": finding.check,
                               "detail": finding.detail}))
    click.echo(json.dumps({"agent": evidence.agent, "reports": evidence.reports, "findings": len(evidence.findings),
                           "evidence_hash": evidence.evidence_hash}))
    if not evidence.findings:
        return
    if slash:
        path = save_evidence(ctx.settings, evidence)
        validator = load_account(Role.VALIDATOR, local_chain=ctx.settings.local_chain)
        result = slash_agent(ctx.chain(), ctx.deployment(), validator, agent, amount, evidence.reason,
                             evidence.evidence_hash)
        click.echo(json.dumps({**result, "evidence": str(path)}))
    fail(f"agent {evidence.agent}: {len(evidence.findings)} of its reports failed verification ({evidence.reason})"
         + ("; slashed" if slash else "; rerun with --slash to slash it"))
