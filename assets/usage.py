"""The usage half in Dagster: the usage log as a projection, and context attribution of its RAG answers."""

from collections import Counter, defaultdict
from dataclasses import replace

import dagster as dg

from assets.plots import bars, histogram, table_md
from orchestration.resources import DataDirResource, KafkaResource
from pipelines import log_views
from pipelines.context_attribution.run import attribute_usage, coverage
from schemas import topics
from schemas.usage import USAGE_EVENT

OWNERS = ["team:ml"]


@dg.asset(
    group_name="usage", kinds={"kafka"}, owners=OWNERS,
    description="The usage log (payable.usage): one event per served request. Requests, prompt and completion "
                "tokens per model, and how many were RAG answers (retrieved sources in the prompt).",
)
def usage_events(kafka: KafkaResource) -> dg.MaterializeResult:
    view = log_views.read_view(kafka.bootstrap, topics.USAGE)
    unique = {e["event_id"]: e for e in view.of(USAGE_EVENT)}  # a re-sent event counts once
    per_model: dict[str, Counter] = defaultdict(Counter)
    for event in unique.values():
        per_model[event["model"]].update(requests=1, rag=bool(event["retrieved_sources"]),
                                         prompt_tokens=event["prompt_tokens"],
                                         completion_tokens=event["completion_tokens"])
    rows = [{"model": m, **{k: c[k] for k in ("requests", "rag", "prompt_tokens", "completion_tokens")}}
            for m, c in sorted(per_model.items())]
    return dg.MaterializeResult(metadata={
        "usage_events": len(unique),
        "rag_answers": sum(r["rag"] for r in rows),
        "tokens": sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows),
        "undecodable": len(view.undecodable),
        "per_model": table_md(rows),
        "tokens_per_model": bars([r["model"] for r in rows], [r["prompt_tokens"] + r["completion_tokens"]
                                                              for r in rows], "tokens per model", "tokens"),
    })


@dg.asset(
    group_name="usage", kinds={"beam", "pytorch", "kafka"}, owners=OWNERS, deps=[usage_events],
    description="How much each retrieved source drove each RAG answer: a Beam pipeline over the usage log "
                "rescores every answer not yet attributed under ablations of its sources (the factorial "
                "surrogate, 16 forward passes for up to 7 sources) with the model that served it, and puts "
                "normalized weights on payable.usage.attribution for the usage rewards; an answer that cannot "
                "be rescored is recorded there as skipped, with its reason.",
)
def context_attribution(data_dir: DataDirResource, kafka: KafkaResource) -> dg.MaterializeResult:
    settings = replace(data_dir.settings(), kafka_bootstrap=kafka.bootstrap)
    report = attribute_usage(settings)
    weights = [s["weight"] for e in coverage(kafka.bootstrap).attributed.values() for s in e["sources"]]
    return dg.MaterializeResult(metadata={
        "method": report.method,
        "attributed": report.attributed,
        "skipped": sum(report.skipped.values()),
        "skipped_by_reason": table_md([{"reason": r, "count": n} for r, n in report.skipped.most_common()]),
        "already_decided": report.already_decided,
        "forward_passes": report.forward_passes,
        "source_weights": histogram(weights, "attribution weight of each cited source (all answers)", "weight"),
    })


@dg.asset_check(asset=context_attribution, description="Every RAG answer on the usage log is attributed or "
                "skipped with a recorded reason (invariant 5), and each attribution's weights sum to 1.")
def every_rag_answer_decided(kafka: KafkaResource) -> dg.AssetCheckResult:
    known = coverage(kafka.bootstrap)
    unnormalized = sorted(u for u, e in known.attributed.items() if abs(sum(s["weight"] for s in e["sources"]) - 1)
                          > 1e-9)
    undecided = known.undecided
    return dg.AssetCheckResult(passed=not undecided and not unnormalized, metadata={
        "rag_answers": len(known.answers), "attributed": len(known.attributed), "skipped": len(known.skipped),
        "undecided_usage_event_ids": str(undecided[:50]), "weights_not_summing_to_1": str(unnormalized[:50]),
        "skipped_by_reason": table_md([{"reason": r, "count": n} for r, n in
                                       Counter(e["reason"] for e in known.skipped.values()).most_common()]),
    })
