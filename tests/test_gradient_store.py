"""Gradient store and per-answer attribution: store scores equal the pipeline's, a planted fact is found first,
the indexed search keeps recall, held-out rows are never named, a missing or stale store is rebuilt."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import dagster as dg
import lance
import numpy as np
import pyarrow as pa
import pytest

from assets.attribution import influence_scores
from orchestration.resources import DataDirResource, KafkaResource
from pipelines.attribution import ScoreArguments, attribute
from pipelines.attribution.answers import attributor, ensure_store, score_eval_set, top_contributions
from pipelines.attribution.scoring import score_examples
from pipelines.attribution.store import (
    EXACT_BELOW,
    SERVING_WIDTH,
    GradientStore,
    StoreSpec,
    build_index,
    default_nprobes,
    index_partitions,
    open_store,
    store_bytes,
    store_uri,
    write_store,
)
from pipelines.attribution.synthetic import make_datanet, rows
from pipelines.attribution.synthetic_features import gradient_like
from pipelines.attribution.task import LoRALanguageModelTask
from pipelines.training import AdapterRegistry, load_adapter, train_latest
from pipelines.training.base_model import load_tokenizer
from pipelines.training.data import tokenize
from tests.attribution_fixtures import FAST, settings_in, write_evals, write_version
from tests.conftest import shared_broker

PLANTER = "0xfac7000000000000000000000000000000000000"
FACT = "the zebra quillon eats purple kelp at midnight on mars ."
TRACIN = ScoreArguments(method="tracin", projection_dim=64)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory):
    """A small datanet with one contribution stating a unique fact; trained a few steps, attributed once."""
    settings = settings_in(tmp_path_factory.mktemp("store"))
    dn = make_datanet(contributors={"on_topic": 3, "off_topic": 2}, per_contributor=3, num_queries=6)
    planted = rows(1, [(PLANTER, FACT)], first_id=700)
    table = pa.concat_tables([dn.table, planted])
    write_version(settings, 1, table)
    write_evals(settings, 1, dn.eval_texts)
    record = train_latest(settings, 1, replace(FAST, num_checkpoints=3), show_progress=False).record
    scored = attribute(settings, 1, record.adapter_id, TRACIN).table
    attributor.cache_clear()
    return settings, table, record, scored, dn


def test_attribution_writes_one_row_per_contribution_keyed_by_adapter(run) -> None:
    settings, table, record, _, _ = run
    registry = AdapterRegistry(settings.adapters_dir)
    store = open_store(registry, record)
    assert store is not None and len(store) == table.num_rows
    stored = store.ds.to_table(columns=["contribution_id", "adapter_id", "trained"])
    assert sorted(stored["contribution_id"].to_pylist()) == sorted(table["contribution_id"].to_pylist())
    assert set(stored["adapter_id"].to_pylist()) == {record.adapter_id}
    assert store.spec.dim == len(record.checkpoints) * store.spec.width and store.spec.projection_dim == 64
    assert all(stored["trained"].to_pylist())  # a stored eval set: every contribution is trained on


def test_store_scores_a_new_eval_set_as_the_pipeline_does(run) -> None:
    settings, table, record, scored, dn = run
    ids, from_store = score_eval_set(settings, record.adapter_id, dn.eval_texts)
    assert attributor(settings, record.adapter_id).store_action == "read"  # no training gradient recomputed
    model, checkpoints = load_adapter(AdapterRegistry(settings.adapters_dir), record)
    tokenizer = load_tokenizer(FAST.base)
    ordered = table.sort_by("contribution_id")
    train = tokenize(ordered["text"].to_pylist(), tokenizer, FAST.max_length)
    queries = tokenize(dn.eval_texts, tokenizer, FAST.max_length)
    example_scores = score_examples(LoRALanguageModelTask(model), checkpoints,
                                    [c.learning_rate for c in record.checkpoints], train.batch(slice(None)),
                                    queries.batch(slice(None)), TRACIN)
    expected = np.zeros((ordered.num_rows, len(dn.eval_texts)))
    np.add.at(expected, train.owner.numpy(), example_scores)
    assert ids == ordered["contribution_id"].to_pylist()
    np.testing.assert_allclose(from_store, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    # and the influence table's score (mean over the eval queries; no duplicates here) is the store's mean
    by_id = dict(zip(scored["contribution_id"].to_pylist(), scored["score"].to_pylist(), strict=True))
    np.testing.assert_allclose(from_store.mean(axis=1), [by_id[i] for i in ids], rtol=1e-5,
                               atol=1e-6 * np.abs(expected).max())


def test_an_answer_repeating_a_contributions_fact_names_it_first(run) -> None:
    settings, _, record, _, _ = run
    hits = top_contributions(settings, record.adapter_id, "the zebra quillon eats",
                             " purple kelp at midnight on mars .", k=5)
    assert len(hits) == 5 and hits[0].contribution_id == 700
    assert hits[0].score > hits[1].score > 0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # and through the serving projection (the path a store above EXACT_BELOW takes): the same first hit
    found = attributor(settings, record.adapter_id)
    assert found.store.spec.serving_width == SERVING_WIDTH < found.store.spec.dim
    projected = found.store.search(found.query_vectors([FACT])[0], 5, exact=False)
    assert projected[0].contribution_id == 700 and projected[0].score == pytest.approx(hits[0].score)


def test_a_missing_store_is_rebuilt_from_the_adapter_and_a_stale_one_refused(run) -> None:
    settings, _, record, _, _ = run
    registry = AdapterRegistry(settings.adapters_dir)
    before = open_store(registry, record).ds.to_table().sort_by("contribution_id")
    shutil.rmtree(store_uri(registry, record))
    store, action = ensure_store(registry, settings, record, TRACIN)
    assert action.startswith("built")
    after = store.ds.to_table().sort_by("contribution_id")
    np.testing.assert_allclose(np.stack(after["features"].to_numpy(zero_copy_only=False)),
                               np.stack(before["features"].to_numpy(zero_copy_only=False)), rtol=1e-6)
    assert ensure_store(registry, settings, record)[1] == "read"
    assert open_store(registry, replace(record, dataset_fingerprint="other")) is None


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Gradient-like synthetic features: a few hundred directions (topics) plus noise."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((200, dim))
    return (centers[rng.integers(0, 200, n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)


def test_indexed_search_keeps_recall_and_never_names_held_out_rows(tmp_path: Path) -> None:
    n, dim = 4000, 32
    feats = clustered(n, dim, 0)
    trained = np.arange(n) % 10 != 0
    spec = StoreSpec("ad-x", "fp", 8, 0, [0.01, 0.02], dim // 2, 1.0)
    uri = str(tmp_path / "g.lance")
    write_store(uri, spec, np.arange(n), [f"h{i}" for i in range(n)], trained, feats)
    build_index(lance.dataset(uri))
    store = GradientStore(uri)
    assert store.indexed and store.spec.feature_norm > 1
    queries = clustered(20, dim, 1)
    recall = []
    for q in queries:
        exact = store.search(q, 10, exact=True)
        ann = store.search(q, 10)
        truth = np.argsort(-np.where(trained, feats.astype(np.float64) @ q, -np.inf))[:10]
        assert [h.contribution_id for h in exact] == list(truth)
        assert all(trained[h.contribution_id] for h in ann)
        assert all(h.score == pytest.approx(float(feats[h.contribution_id].astype(np.float64) @ q)) for h in ann)
        recall.append(len({h.contribution_id for h in ann} & set(truth)) / 10)
    assert np.mean(recall) >= 0.9


def test_a_search_probes_a_share_of_the_partitions_that_holds_as_the_store_grows() -> None:
    assert default_nprobes(30_000) == 32  # of 173 partitions: recall 0.96 measured
    assert default_nprobes(1_000_000) == 125 == index_partitions(1_000_000) // 8  # 32 found only 0.74 there
    sizes = [10**e for e in range(3, 9)]
    assert all(default_nprobes(n) >= index_partitions(n) // 8 for n in sizes)  # never a shrinking share
    assert [default_nprobes(n) for n in sizes] == sorted(default_nprobes(n) for n in sizes)


def test_a_real_width_store_is_searched_through_its_serving_projection_and_keeps_recall(tmp_path: Path) -> None:
    """4,608 columns (3 checkpoints x 6 layers x 256, attribution's default): candidates come from the 256-wide
    serving projection (a flat scan of it, then its index) and are re-ranked on the full features; recall@10
    against exact stays >= 0.9 both ways and held-out rows are never named."""
    n, dim = 3000, 4608
    feats = gradient_like(n, dim, seed=0)
    trained = np.arange(n) % 10 != 0
    spec = StoreSpec("ad-x", "fp", 256, 0, [0.01, 0.02, 0.03], dim // 3, 1.0)
    uri = str(tmp_path / "g.lance")
    write_store(uri, spec, np.arange(n), [f"h{i}" for i in range(n)], trained, feats)
    flat = GradientStore(uri)
    assert flat.spec.serving_width == SERVING_WIDTH and not flat.indexed  # 3000 x 256 floats: a flat scan
    assert n * SERVING_WIDTH < EXACT_BELOW <= n * dim
    build_index(lance.dataset(uri))
    indexed = GradientStore(uri)
    assert indexed.indexed and indexed.ds.describe_indices()[0].field_names == ["serving"]
    queries = gradient_like(20, dim, seed=1)
    for store in (flat, indexed):
        recall = []
        for q in queries:
            truth = np.argsort(-np.where(trained, feats.astype(np.float64) @ q, -np.inf))[:10]
            found = store.search(q, 10, exact=False)
            assert len(found) == 10 and all(trained[h.contribution_id] for h in found)
            assert all(h.score == pytest.approx(float(feats[h.contribution_id].astype(np.float64) @ q))
                       for h in found)
            recall.append(len({h.contribution_id for h in found} & set(truth)) / 10)
        assert np.mean(recall) >= 0.9


def test_the_dagster_asset_reports_the_store_it_wrote(run) -> None:
    settings, table, record, _, _ = run
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datanet", ["dn-1"])
    result = dg.materialize([influence_scores], partition_key="dn-1", instance=instance,
                            run_config={"ops": {"influence_scores": {"config": {"lds_subsets": 0}}}},
                            resources={"data_dir": DataDirResource(path=str(settings.data_dir)),
                                       "kafka": KafkaResource(bootstrap=shared_broker().kafka_bootstrap)})
    metadata = result.asset_materializations_for_node("influence_scores")[0].metadata
    registry = AdapterRegistry(settings.adapters_dir)
    store = open_store(registry, record)
    assert store.spec.projection_dim == ScoreArguments().projection_dim and len(store) == table.num_rows
    assert metadata["gradient_store_bytes"].value == store_bytes(store_uri(registry, record)) > 0
