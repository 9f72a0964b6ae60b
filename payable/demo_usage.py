"""The demo's usage round: the server's agent stakes OPEN in the AgentRegistry (early, so that the loop's ingest
carries its registration), a few RAG chats against the demo's datanet models (each usage event signed by that
agent), their context attribution (on the base that served them), then the usage epoch that pays the data behind
them on-chain, and a table of what each answer earned whom."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from rich.table import Table

import contracts
from orchestration.loop import Loop
from payable.chain import Chain, Deployment
from payable.settings import Settings
from pipelines.training.arguments import TINY

QUESTIONS = ("What makes bread rise?", "How does photosynthesis work?", "Why is the sky blue?")


def chat(settings: Settings, datanet_ids: dict[str, int], base: str = TINY) -> list[dict]:
    """One RAG chat per question against each demo datanet's model (its alias ``dn-<id>``), on a real server over
    the ``base`` the demo trained on (only adapters of the served base are served)."""
    import openai

    from serving.server import ServeOptions, ServerThread, build

    answers = []
    with ServerThread(build(settings, ServeOptions(base=base, max_batch=4)), usage_timeout_s=30) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        for n, question in enumerate(QUESTIONS):
            datanet = list(datanet_ids.values())[n % len(datanet_ids)]
            reply = client.chat.completions.with_raw_response.create(
                model=f"dn-{datanet}", messages=[{"role": "user", "content": question}], max_tokens=16,
                temperature=0, extra_body={"retrieval": {"datanets": [datanet], "k": 2}})
            parsed = reply.parse()
            answers.append({"usage_event_id": reply.headers["X-Payable-Usage-Event"], "question": question,
                            "answer": parsed.choices[0].message.content,
                            "cited": [c["contribution_id"] for c in parsed.model_extra.get("citations") or []]})
    return answers


def stake_agent(settings: Settings) -> None:
    """The serving agent (the local dev account of its role) gets the minimum stake from the deployer and locks it."""
    from payable.agents import fund_local_agent, register_agent
    from payable.keys import Role, dev_account

    chain, deployment = Chain(settings.rpc_url), Deployment.load(settings.deployment_file)
    agent = dev_account(Role.AGENT.value)
    minimum = chain.contract(contracts.AGENT_REGISTRY, deployment.agents).functions.minimumStake().call()
    fund_local_agent(chain, deployment, dev_account(Role.DEPLOYER.value), agent.address, minimum)
    register_agent(chain, deployment, agent, "http://127.0.0.1 (payable demo)", minimum)


def usage_round(settings: Settings, loop: Loop, datanet_ids: dict[str, int],
                stage: Callable[[str], AbstractContextManager[None]], base: str = TINY) -> list[dict]:
    """Chats (the serving agent staked before the loop's first ingest: ``stake_agent``), attributes the chats,
    closes the usage epoch on-chain; the answers with what each earned whom."""
    from pipelines.rewards.usage import earnings_of

    with stage("RAG chats"):
        answers = chat(settings, datanet_ids, base)
    with stage("attribute RAG answers + usage epoch on-chain"):
        loop.run("attribute_usage")
        loop.run("close_reward_epoch")
    return [{**a, "earned": earnings_of(settings, a["usage_event_id"])} for a in answers]


def usage_table(answers: list[dict]) -> Table:
    table = Table(title="Usage epoch: what each answer paid whom (OPEN)")
    for column in ("question", "answer", "cited", "earned (account role contribution: OPEN)"):
        table.add_column(column)
    for a in answers:
        earned = "\n".join(f"{e['account'][:10]}… {e['role']} {e['contribution_id'] or ''}: {e['amount'] / 10**18:.6f}"
                           for e in a["earned"]) or "pending (not payable yet)"
        table.add_row(a["question"], (a["answer"] or "")[:60], ", ".join(map(str, a["cited"])) or "none", earned)
    return table
