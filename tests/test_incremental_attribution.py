"""Incremental attribution: a run recomputes only the training gradients the gradient store lacks at the
adapter's checkpoint weights, and says what it recomputed, what it reused and why (API, CLI, Dagster)."""

from __future__ import annotations

import hashlib
import itertools
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import pipelines.attribution.scoring as scoring
from assets.attribution import influence_scores
from orchestration.resources import DataDirResource, KafkaResource
from pipelines.attribution import ScoreArguments, attribute
from pipelines.attribution.store import open_store, store_uri, weights_fingerprint
from pipelines.attribution.synthetic import make_datanet, rows
from pipelines.training import AdapterRegistry, train_latest
from pipelines.training.data import held_out
from tests.attribution_fixtures import FAST, settings_in, write_evals, write_version
from tests.conftest import shared_broker, stack_env

REPO = Path(__file__).resolve().parent.parent

QUICK = ScoreArguments(method="tracin", projection_dim=64)
QUICK = replace(QUICK, harm=replace(QUICK.harm, refit=False), quality=replace(QUICK.quality, lds_subsets=0))
TRAIN = replace(FAST, num_checkpoints=2)
PLANTER = "0x5ea0000000000000000000000000000000000000"
EVALS_2 = ["simmer the beans with salt . fry the garlic until golden .", "bake the bread in the oven .",
           "chop the onions in the pan . stir the soup over low heat .", "roast the potatoes with olive oil ."]


@pytest.fixture
def gradient_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts projected-gradient passes over training and query batches during the test."""
    calls = {"train": 0, "query": 0}
    real = scoring.projected_gradients

    def counted(task, checkpoints, batch, projector, query=False):
        calls["query" if query else "train"] += 1
        return real(task, checkpoints, batch, projector, query)

    monkeypatch.setattr(scoring, "projected_gradients", counted)
    return calls


@pytest.fixture(scope="module")
def datanet(tmp_path_factory: pytest.TempPathFactory):
    """A trained adapter whose first attribution run computed and stored every gradient."""
    settings = settings_in(tmp_path_factory.mktemp("incremental"))
    dn = make_datanet(contributors={"on_topic": 3, "off_topic": 2}, per_contributor=3, num_queries=6)
    write_version(settings, 1, dn.table)
    write_evals(settings, 1, dn.eval_texts)
    record = train_latest(settings, 1, TRAIN, show_progress=False).record
    first = attribute(settings, 1, record.adapter_id, QUICK)
    return settings, dn, record, first


def test_the_first_run_computes_every_gradient_and_says_why(datanet) -> None:
    _, dn, _, first = datanet
    assert (first.gradients.recomputed, first.gradients.reused) == (dn.table.num_rows, 0)
    assert first.gradients.why == "the datanet has no gradient store yet"


def test_a_new_eval_set_on_an_unchanged_adapter_computes_no_training_gradient(datanet, gradient_calls) -> None:
    settings, dn, record, _ = datanet
    write_evals(settings, 1, EVALS_2)
    again = attribute(settings, 1, record.adapter_id, QUICK)
    assert gradient_calls == {"train": 0, "query": 1}, "only the new eval set's gradients are computed"
    assert (again.gradients.recomputed, again.gradients.reused) == (0, dn.table.num_rows)
    assert again.gradients.why.startswith("its own gradient store was taken at the same checkpoint weights")
    # the same scores as a run that recomputes everything
    shutil.rmtree(store_uri(AdapterRegistry(settings.adapters_dir), record))
    fresh = attribute(settings, 1, record.adapter_id, QUICK)
    assert gradient_calls["train"] > 0 and fresh.gradients.reused == 0
    got, want = again.table.sort_by("contribution_id"), fresh.table.sort_by("contribution_id")
    assert got["score"].to_pylist() == want["score"].to_pylist(), "reusing the store changes no bit of a score"
    assert got["rank"].to_pylist() == want["rank"].to_pylist()


def test_an_adapter_retrained_for_a_new_eval_set_reuses_the_earlier_adapters_gradients(datanet,
                                                                                       gradient_calls) -> None:
    """The eval set is part of the adapter id but not of the trained weights: content-addressed reuse."""
    settings, dn, record, _ = datanet
    write_evals(settings, 1, EVALS_2[:3])
    retrained = train_latest(settings, 1, TRAIN, show_progress=False).record
    registry = AdapterRegistry(settings.adapters_dir)
    assert retrained.adapter_id != record.adapter_id
    assert weights_fingerprint(registry.checkpoint_weights(retrained)) == \
        weights_fingerprint(registry.checkpoint_weights(record))
    calls_before = gradient_calls["train"]
    result = attribute(settings, 1, retrained.adapter_id, QUICK)
    assert gradient_calls["train"] == calls_before == 0
    assert (result.gradients.recomputed, result.gradients.reused) == (0, dn.table.num_rows)
    assert f"adapter {record.adapter_id}'s gradient store" in result.gradients.why
    assert len(open_store(registry, retrained)) == dn.table.num_rows, "the new adapter gets its own store"


def held_out_texts(count: int, start: int) -> list[str]:
    """Texts the holdout split makes eval queries (their content hash falls in the holdout)."""
    texts = (f"season the rice with salt, batch {i} ." for i in itertools.count(start))
    return list(itertools.islice((t for t in texts if held_out("0x" + hashlib.sha256(t.encode()).hexdigest(),
                                                                  TRAIN.eval_holdout_mod)), count))


def test_held_out_additions_reuse_the_trained_gradients_and_compute_only_the_new_ones(tmp_path, gradient_calls):
    """Without a stored eval set, a contribution that falls in the holdout changes the eval queries (a new
    adapter id) but not the training rows: the weights stay, only its own gradient is computed."""
    settings = settings_in(tmp_path)
    dn = make_datanet(datanet_id=2, seed=3, contributors={"on_topic": 2, "off_topic": 2}, per_contributor=3)
    first, second = held_out_texts(2, 0), held_out_texts(1, 1000)
    table = pa.concat_tables([dn.table, rows(2, [(PLANTER, t) for t in first], first_id=600)])
    write_version(settings, 2, table)
    record = train_latest(settings, 2, TRAIN, show_progress=False).record
    assert record.eval_source == "holdout"
    assert attribute(settings, 2, record.adapter_id, QUICK).gradients.reused == 0
    grown = pa.concat_tables([table, rows(2, [(PLANTER, second[0])], first_id=700)])
    write_version(settings, 2, grown, offsets="0-2")
    retrained = train_latest(settings, 2, TRAIN, show_progress=False).record
    assert retrained.adapter_id != record.adapter_id
    before = gradient_calls["train"]
    result = attribute(settings, 2, retrained.adapter_id, QUICK)
    assert gradient_calls["train"] - before == 1, "one batch: the added contribution's examples alone"
    assert (result.gradients.recomputed, result.gradients.reused) == (1, table.num_rows)
    assert result.gradients.why.endswith("1 contents it lacks computed")
    assert result.table.filter(pc.equal(result.table["contribution_id"], 700))["trained"].to_pylist() == [False]


@pytest.fixture(scope="module")
def grown(datanet):
    """A new dataset version adding three contributions, trained: its checkpoints all differ."""
    settings, dn, _, _ = datanet
    added = rows(1, [("0xadd0000000000000000000000000000000000000", f"stir the soup {t} with fresh herbs .")
                     for t in ("slowly", "gently", "twice")], first_id=500)
    table = pa.concat_tables([dn.table, added])
    write_version(settings, 1, table, offsets="0-2")
    return settings, table, train_latest(settings, 1, TRAIN, show_progress=False).record


def test_a_version_adding_contributions_recomputes_everything_and_says_why(grown) -> None:
    settings, table, record = grown
    result = attribute(settings, 1, record.adapter_id, QUICK)
    assert (result.gradients.recomputed, result.gradients.reused) == (table.num_rows, 0)
    assert "no warm start" in result.gradients.why


def test_the_cli_and_the_dagster_asset_report_what_they_recomputed_and_reused(grown) -> None:
    settings, table, record = grown
    broker = shared_broker()
    env = stack_env(settings) | {"KAFKA_BOOTSTRAP": broker.kafka_bootstrap}
    done = subprocess.run([sys.executable, "-c", "from payable.cli import main; main()", "attribute", "--datanet",
                           "1", "--lds-subsets", "0"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    # the store holds 64-wide projections; the CLI's default projection is another
    assert (f"gradients: recomputed: {table.num_rows}, reused: 0, why: the gradients stored at these checkpoint "
            "weights use another projection") in done.stderr
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("datanet", ["dn-1"])
    materialized = dg.materialize([influence_scores], partition_key="dn-1", instance=instance,
                                  run_config={"ops": {"influence_scores": {"config": {"lds_subsets": 0}}}},
                                  resources={"data_dir": DataDirResource(path=str(settings.data_dir)),
                                             "kafka": KafkaResource(bootstrap=broker.kafka_bootstrap)})
    metadata = materialized.asset_materializations_for_node("influence_scores")[0].metadata
    assert (metadata["gradients_recomputed"].value, metadata["gradients_reused"].value) == (0, table.num_rows)
    assert metadata["gradients_why"].value.startswith("its own gradient store")
    assert open_store(AdapterRegistry(settings.adapters_dir), record).spec.projection_dim == 256
