"""Beam runner selection by configuration, and the pipelines on real multi-process engines on 127.0.0.1: a
Dask cluster (a scheduler and two worker processes), where the project's DaskRunner is tested against
Beam's stock one, and Prism (Beam's portable runner, its SDK harnesses in worker-pool processes); then
validate and attribution giving the same results in-process and on each engine."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.userstate import BagStateSpec
from apache_beam.utils.windowed_value import WindowedValue
from click.testing import CliRunner

from payable.cli import main
from payable.content_store import ContentStore
from payable.settings import Settings
from pipelines.attribution import ScoreArguments, attribute
from pipelines.attribution.synthetic import make_datanet
from pipelines.runners import pipeline_options
from pipelines.runners.dask import UnsupportedOnDask
from pipelines.training import train_latest
from pipelines.validate.run import validate_new_offsets
from schemas import events, topics
from tests.attribution_fixtures import FAST, write_evals, write_version
from tests.test_validate_pipeline import _read_topic, _rows
from tests.test_validate_support import created, mutate, produce_facts, retracted, submitted, text

STOCK = "apache_beam.runners.dask.dask_runner.DaskRunner"
OURS = "pipelines.runners.dask.DaskRunner"


def dask_options(address: str, runner: str = OURS, partitions: int = 4) -> list[str]:
    return [f"--runner={runner}", f"--dask_client_address={address}", f"--dask_npartitions={partitions}"]


def test_pipelines_run_in_process_unless_the_configuration_names_a_runner(tmp_path, monkeypatch):
    monkeypatch.delenv("PAYABLE_BEAM_OPTIONS", raising=False)
    default = pipeline_options(Settings.from_env(tmp_path)).get_all_options()
    assert (default["runner"], default["direct_running_mode"]) == ("DirectRunner", "in_memory")
    monkeypatch.setenv("PAYABLE_BEAM_OPTIONS", f"--runner={OURS} --dask_client_address=tcp://127.0.0.1:1")
    options = pipeline_options(Settings.from_env(tmp_path), ["--dask_npartitions=3"]).get_all_options()
    assert (options["runner"], options["address"], options["npartitions"]) == (OURS, "tcp://127.0.0.1:1", 3)


@pytest.mark.parametrize("command", ["validate", "attribute"])
def test_every_stage_command_takes_beam_options(tmp_path, monkeypatch, command):
    """--beam-options replaces PAYABLE_BEAM_OPTIONS in the Settings the stage runs with."""
    import pipelines.attribution
    import pipelines.validate.run

    seen = []

    def stage(settings, *args, **kwargs):
        seen.append(settings)
        if command == "attribute":
            raise LookupError("seen")
        return pipelines.validate.run.ValidateReport()

    monkeypatch.setattr(pipelines.validate.run, "validate_new_offsets", stage)
    monkeypatch.setattr(pipelines.attribution, "attribute", stage)
    args = {"validate": ["validate"], "attribute": ["attribute", "--datanet", "1"]}[command]
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), *args, "--beam-options",
                                       f"--runner={OURS} --dask_npartitions=2"],
                                env={"PAYABLE_BEAM_OPTIONS": "--runner=DirectRunner"})
    assert seen, result.output
    assert pipeline_options(seen[0]).view_as(StandardOptions).runner == OURS


def _branches(out: Path, runner: str, address: str) -> list[str]:
    """Two independent leaves (Beam's runner computes only the last one) and a combined side input."""
    def write(value, name):
        (out / f"{name}-{value}").write_text("")
        return value

    pipeline = beam.Pipeline(options=PipelineOptions(dask_options(address, runner)))
    numbers = pipeline | beam.Create(list(range(40)))
    _ = numbers | "Left" >> beam.Map(write, "left")
    total = numbers | beam.CombineGlobally(sum)
    _ = numbers | "Right" >> beam.Map(lambda n, t: write(n + 1000 * t, "right"), beam.pvalue.AsSingleton(total))
    _run(pipeline)
    return sorted(os.listdir(out))


def _run(pipeline: beam.Pipeline) -> None:
    """Runs to the end, then closes the result's Dask client: the stock runner leaves it open, and it keeps
    reconnecting (tracebacks on stderr) after the session's scheduler is gone."""
    result = pipeline.run()
    try:
        result.wait_until_finish()
    finally:
        result.client.close()


class CountPerBundle(beam.DoFn):
    """Emits each element and, from finish_bundle, the bundle's element count."""

    def start_bundle(self):
        self.count = 0

    def process(self, element):
        self.count += 1
        yield element

    def finish_bundle(self):
        yield WindowedValue(("count", self.count), 0, [beam.transforms.window.GlobalWindow()])


def _bundles(out: Path, runner: str, address: str) -> list:
    def save(value):
        (out / f"{uuid.uuid4().hex}.json").write_text(json.dumps(value))

    pipeline = beam.Pipeline(options=PipelineOptions(dask_options(address, runner)))
    _ = pipeline | beam.Create(list(range(40))) | beam.ParDo(CountPerBundle()) | beam.Map(save)
    _run(pipeline)
    return [json.loads(path.read_text()) for path in out.iterdir()]


def test_stock_dask_runner_drops_branches_and_ours_runs_every_leaf(dask_scheduler, tmp_path):
    stock, ours = tmp_path / "stock", tmp_path / "ours"
    stock.mkdir(), ours.mkdir()
    expected = sorted([f"left-{n}" for n in range(40)] + [f"right-{n + 1000 * 780}" for n in range(40)])
    assert _branches(ours, OURS, dask_scheduler) == expected
    stock_files = _branches(stock, STOCK, dask_scheduler)
    assert not any(name.startswith("left-") for name in stock_files), "the stock runner skips the first leaf"


def test_stock_dask_runner_drops_finish_bundle_outputs_and_ours_keeps_each_bundles_own(dask_scheduler, tmp_path):
    stock, ours = tmp_path / "stock", tmp_path / "ours"
    stock.mkdir(), ours.mkdir()
    result = _bundles(ours, OURS, dask_scheduler)
    assert sorted(v for v in result if isinstance(v, int)) == list(range(40)), "each element exactly once"
    counts = [v[1] for v in result if isinstance(v, list)]
    assert sum(counts) == 40 and len(counts) == 4, "finish_bundle output of each of the 4 bundles kept"
    stock_result = _bundles(stock, STOCK, dask_scheduler)
    assert not [v for v in stock_result if isinstance(v, list)], "the stock runner drops finish_bundle outputs"


class Lifecycle(CountPerBundle):
    """CountPerBundle marking every setup and teardown with its process and instance."""

    def __init__(self, out: Path):
        self.out = out

    def _mark(self, event: str) -> None:
        (self.out / f"{event}-{os.getpid()}-{id(self)}").write_text("")

    def setup(self):
        self._mark("setup")

    def teardown(self):
        self._mark("teardown")


def _lifecycle_run(marks: Path, saved: Path, address: str) -> tuple[list[str], list[str], list]:
    """(setups, teardowns, counts per bundle) of one run of 40 elements in 8 bundles."""
    def save(value):
        (saved / f"{uuid.uuid4().hex}.json").write_text(json.dumps(value))

    pipeline = beam.Pipeline(options=PipelineOptions(dask_options(address, partitions=8)))
    _ = pipeline | beam.Create(list(range(40))) | beam.ParDo(Lifecycle(marks)) | beam.Map(save)
    pipeline.run().wait_until_finish()
    values = [json.loads(path.read_text()) for path in saved.iterdir()]
    names = sorted(os.listdir(marks))
    return ([n.removeprefix("setup-") for n in names if n.startswith("setup-")],
            [n.removeprefix("teardown-") for n in names if n.startswith("teardown-")],
            [v[1] for v in values if isinstance(v, list)])


def test_a_worker_sets_a_dofn_up_once_per_run_and_each_bundle_starts_and_finishes_on_its_own(dask_scheduler,
                                                                                            tmp_path):
    """The DoFn instance is reused across a run's bundles on a worker (as Beam's workers do), but each of the
    8 bundles has its own start_bundle / finish_bundle (8 counts, summing to the 40 elements), each worker
    set it up at most once, and the run's end tore every instance down; a second run sets up afresh."""
    runs = []
    for run in ("first", "second"):
        marks, saved = tmp_path / run / "marks", tmp_path / run / "saved"
        marks.mkdir(parents=True), saved.mkdir()
        runs.append(_lifecycle_run(marks, saved, dask_scheduler))
    for setups, teardowns, counts in runs:
        assert len(counts) == 8 and sum(counts) == 40, f"each bundle finished on its own: {counts}"
        pids = [instance.split("-")[0] for instance in setups]
        assert 1 <= len(setups) <= 2 and len(set(pids)) == len(pids), f"one setup per worker at most: {setups}"
        assert teardowns == setups, "every set-up instance torn down when the run ended"


def _side_input_run(out: Path, runner: str, address: str) -> Counter:
    def mark(value, name):
        (out / f"{name}-{value}-{uuid.uuid4().hex}").write_text("")
        return value

    pipeline = beam.Pipeline(options=PipelineOptions(dask_options(address, runner)))
    numbers = pipeline | beam.Create(list(range(40))) | "Source" >> beam.Map(mark, "source")
    total = numbers | beam.CombineGlobally(sum)
    _ = numbers | "Use" >> beam.Map(lambda n, t: mark(n + 1000 * t, "use"), beam.pvalue.AsSingleton(total))
    _run(pipeline)
    return Counter(name.split("-")[0] for name in os.listdir(out))


def test_stock_dask_runner_recomputes_a_side_inputs_upstream_and_ours_computes_it_once(dask_scheduler, tmp_path):
    """The stock runner hides the side input's bag inside the reading tasks, which compute it again (for
    attribution: every training gradient twice or more); ours makes it one dependency of the graph."""
    stock, ours = tmp_path / "stock", tmp_path / "ours"
    stock.mkdir(), ours.mkdir()
    assert _side_input_run(ours, OURS, dask_scheduler) == Counter(source=40, use=40)
    assert _side_input_run(stock, STOCK, dask_scheduler)["source"] > 40


class Stateful(beam.DoFn):
    STATE = BagStateSpec("seen", beam.coders.VarIntCoder())

    def process(self, element, seen=beam.DoFn.StateParam(STATE)):  # noqa: B008 - how Beam declares state
        yield element


def _split(n):
    yield beam.pvalue.TaggedOutput("odd" if n % 2 else "even", n)


@pytest.mark.parametrize("build, message", [
    (lambda p: p | beam.Create([(1, 1)]) | beam.ParDo(Stateful()), "state and timers"),
    (lambda p: p | beam.Create([1, 2]) | beam.ParDo(_split).with_outputs("odd", "even"), "multi-output ParDo"),
    (lambda p: p | beam.Create([1]) | beam.WindowInto(beam.window.FixedWindows(10)), "not translated"),
])
def test_what_the_dask_runner_cannot_run_is_refused_before_it_runs(build, message):
    pipeline = beam.Pipeline(options=PipelineOptions(dask_options("tcp://127.0.0.1:1")))
    build(pipeline)
    with pytest.raises(UnsupportedOnDask, match=message):
        pipeline.run()


@pytest.fixture(params=["dask", "prism"])
def engine(request) -> list[str]:
    """The Beam options of a real multi-process engine: the Dask cluster, or Prism with its worker pool."""
    if request.param == "dask":
        return dask_options(request.getfixturevalue("dask_scheduler"))
    return request.getfixturevalue("prism")


def test_validate_gives_identical_results_in_process_and_on_a_distributed_engine(stack, engine, tmp_path):
    """Same facts on the log, validated twice from offset zero: in-process, then on the engine chosen by
    configuration alone; same verdicts, same dead letters, same Lance rows, same report."""
    from payable import kafka_log

    kafka_log.ensure_topics(stack.kafka_bootstrap)
    store = ContentStore(stack.content_dir)
    produce_facts(stack, events.DATANET_CREATED, [created(1, store), created(2, store)])
    base = text(1, 120)
    doomed = submitted(9, 2, store, text(9).encode())
    produce_facts(stack, events.CONTRIBUTION_SUBMITTED, [
        submitted(1, 1, store, base.encode()), submitted(2, 1, store, base.encode()),
        submitted(3, 1, store, mutate(base, 2).encode()), submitted(4, 1, store, b" . "),
        submitted(5, 2, store, text(5).encode()), submitted(6, 2, store, text(6).encode()),
        submitted(7, 3, store, text(7).encode()), submitted(8, 1, store, text(8).encode()), doomed])
    produce_facts(stack, events.FACT_RETRACTED, [retracted(doomed, offset=0)])

    def run(settings: Settings):
        report = validate_new_offsets(settings)
        verdicts = Counter(json.dumps(v, sort_keys=True) for v in _read_topic(stack, topics.VERDICTS))
        decided = {d: (r.accepted, dict(r.rejected), r.retracted_after_acceptance) for d, r in report.datanets.items()}
        return verdicts, decided, report.dead_letters, [_rows(settings, d) for d in (1, 2)]

    runs = {}
    for name, options in (("local", ()), ("engine", tuple(engine))):
        settings = replace(stack, data_dir=tmp_path / name, beam_options=options)
        shutil.copytree(stack.content_dir, settings.content_dir)
        runs[name] = run(settings)
    (verdicts, *local), (both, *on_engine) = runs["local"], runs["engine"]
    assert set(verdicts.values()) == {1} and both == Counter({v: 2 for v in verdicts}), "the same verdicts again"
    assert on_engine == local
    assert local[0][1][0] == 2 and local[0][2][0] == 2, "a real mix of accepted and rejected"


DATAINF = ScoreArguments(method="datainf", projection_dim=32, batch_size=4)


@pytest.fixture(scope="module")
def attributed_in_process(tmp_path_factory):
    """A trained adapter and its DataInf attribution in-process, computed once for every engine compared."""
    tmp = tmp_path_factory.mktemp("attribution")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("PAYABLE_BEAM_OPTIONS", raising=False)
        settings = Settings.from_env(tmp)
        dn = make_datanet(contributors={"on_topic": 2, "off_topic": 1}, per_contributor=2, num_queries=4)
        write_version(settings, 1, dn.table)
        write_evals(settings, 1, dn.eval_texts)
        record = train_latest(settings, 1, FAST, show_progress=False).record
        local = attribute(settings, 1, record.adapter_id, DATAINF, use_beam=True).table
    return tmp, record, local.sort_by("contribution_id")


def test_attribution_gives_identical_scores_in_process_and_on_a_distributed_engine(engine, attributed_in_process,
                                                                                    monkeypatch):
    """The attribution pipeline's scores, in-process and on the engine (PAYABLE_BEAM_OPTIONS). DataInf is the
    method that exercises the most: two combines and singleton side inputs (the stock Dask runner got it
    wrong)."""
    tmp, record, local = attributed_in_process
    monkeypatch.setenv("PAYABLE_BEAM_OPTIONS", " ".join(engine))
    remote = attribute(Settings.from_env(tmp), 1, record.adapter_id, DATAINF, use_beam=True).table
    remote = remote.sort_by("contribution_id")
    assert remote["contribution_id"] == local["contribution_id"]
    assert remote["score"].to_pylist() == pytest.approx(local["score"].to_pylist(), rel=1e-9, abs=1e-12)
    assert remote["rank"] == local["rank"]
