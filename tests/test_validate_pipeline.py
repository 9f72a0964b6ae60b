"""The validate stage end to end: real broker, real Beam runner, real Lance files, real content store."""

from __future__ import annotations

import shutil
from collections import Counter

import lance
import pyarrow as pa
import pytest
from click.testing import CliRunner

from payable import kafka_log
from payable.cli import main
from payable.content_store import ContentStore
from payable.datanets import DatanetSpec
from pipelines.validate import checkpoint, materialize, reasons, staging
from pipelines.validate.run import rebuild_state, validate_dir, validate_new_offsets
from schemas import events, topics
from schemas.verdicts import CONTRIBUTION_VERDICT
from tests.test_validate_support import created, mutate, produce_facts, retracted, submitted, text

MULTI_PROCESS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
QA = DatanetSpec("qa", "jsonl", ("question", "answer"))


def _produce_raw(settings, values: list[tuple[bytes, list]]) -> None:
    producer = kafka_log.make_producer(settings.kafka_bootstrap)
    for value, headers in values:
        producer.send(topics.CHAIN_FACTS, value=value, key=topics.datanet_key(1), headers=headers)
    producer.flush()
    producer.close()


def _read_topic(settings, topic) -> list:
    messages = []
    for partition, end in kafka_log.end_offsets(settings.kafka_bootstrap, topic).items():
        messages += kafka_log.read_range(settings.kafka_bootstrap, topic, partition, 0, end)
    return [events.decode(m.value, m.headers)[1] for m in messages]


def _rows(settings, datanet_id: int, version: int | None = None) -> list[tuple]:
    uri = materialize.dataset_uri(settings.lance_dir, datanet_id)
    table = lance.dataset(uri, version=version).to_table()
    return sorted(zip(*(table.column(name).to_pylist() for name in table.column_names), strict=True))


@pytest.fixture
def settings(stack):
    kafka_log.ensure_topics(stack.kafka_bootstrap)
    return stack


def test_every_reason_is_decided_accounted_for_and_published(settings):
    store = ContentStore(settings.content_dir)
    original = text(1, 120)
    produce_facts(settings, events.DATANET_CREATED, [
        created(1, store, max_size=4000), created(2, store, QA),
        created(3, store, metadata_uri="cas://sha256/" + "00" * 32)])
    doomed = submitted(16, 1, store, text(16, 50).encode())
    facts = [
        submitted(1, 1, store, original.encode()),
        submitted(2, 1, store, original.encode()),
        submitted(3, 1, store, ("  " + original.upper().replace(" ", " ;  ")).encode()),
        submitted(4, 1, store, mutate(original, 2).encode()),
        submitted(5, 1, store, b" . "),
        submitted(6, 1, store, b"\xff\xfe not text"),
        submitted(7, 1, store, text(7).encode(), content_hash="0x" + "12" * 32),
        submitted(8, 1, store, text(8).encode(), size=3),
        submitted(9, 1, store, b"w " * 2500),
        submitted(10, 1, None, b"gone", uri="cas://sha256/" + "ee" * 32),
        submitted(11, 1, None, b"far", uri="gopher://example.org/x"),
        submitted(12, 9, store, text(12).encode()),
        submitted(13, 3, store, text(13).encode()),
        submitted(14, 2, store, b'{"question": "q"\n'),
        submitted(15, 2, store, b'{"question": "q", "answer": "a"}\n{"answer": "b"}\n'),
        doomed,
        submitted(17, 2, store, b'{"question": "why is the sky blue", "answer": "rayleigh scattering"}\n'),
    ]
    produce_facts(settings, events.CONTRIBUTION_SUBMITTED, facts)
    produce_facts(settings, events.FACT_RETRACTED, [retracted(doomed, offset=0)])
    produce_facts(settings, events.CONTRIBUTION_SUBMITTED, [facts[0]])  # a replayed fact
    _produce_raw(settings, [(b"{not json", events.CONTRIBUTION_SUBMITTED.headers),
                            (b'{"event_id": "x"}', events.CONTRIBUTION_SUBMITTED.headers),
                            (b"{}", [("event-type", b"Bogus"), ("schema-version", b"1")])])

    report = validate_new_offsets(settings)

    expected = {2: reasons.DUPLICATE, 3: reasons.DUPLICATE_NORMALIZED, 4: reasons.NEAR_DUPLICATE,
                5: reasons.EMPTY, 6: reasons.NOT_UTF8, 7: reasons.HASH_MISMATCH, 8: reasons.SIZE_MISMATCH,
                9: reasons.TOO_LARGE, 10: reasons.FETCH_CONTENT_MISSING, 11: reasons.FETCH_UNSUPPORTED_URI,
                12: reasons.UNKNOWN_DATANET, 13: reasons.DATANET_SPEC_INVALID, 14: reasons.INVALID_JSONL,
                15: reasons.MISSING_FIELDS, 16: reasons.RETRACTED}
    verdicts = _read_topic(settings, topics.VERDICTS)
    latest = {v["contribution_id"]: v for v in verdicts}
    assert {cid: v["reason"] for cid, v in latest.items() if v["reason"]} == expected
    assert {cid for cid, v in latest.items() if v["status"] == reasons.ACCEPTED} == {1, 17}
    assert latest[4]["duplicate_of"] == 1 and latest[4]["penalize"] and latest[4]["similarity"] >= 0.8

    assert report.submitted == len(facts), "every submission accepted or rejected, the replay not twice"
    by_reason = sum((r.rejected for r in report.datanets.values()), Counter())
    assert by_reason == Counter(expected.values())
    assert sum(r.accepted for r in report.datanets.values()) == 2 and report.datanets[1].replayed == 1

    dead = _read_topic(settings, topics.VERDICTS_DLQ)
    assert len(dead) == report.dead_letters == 3
    assert {d["origin"] for d in dead} == {"validate"} and any("unknown event type" in d["error"] for d in dead)

    assert [row[0] for row in _rows(settings, 1)] == [1], "only the accepted text; never the retracted one"
    assert [row[0] for row in _rows(settings, 2)] == [17]
    assert materialize.open_dataset(materialize.dataset_uri(settings.lance_dir, 9)) is None

    again = validate_new_offsets(settings)
    assert again.runs == [] and len(_read_topic(settings, topics.VERDICTS)) == len(verdicts)


def test_history_survives_runs_is_rebuilt_from_the_log_and_replay_reproduces_rows(settings):
    store = ContentStore(settings.content_dir)
    first, second = text(1, 120), text(2, 120)
    a, b = submitted(1, 1, store, first.encode()), submitted(2, 1, store, second.encode())
    produce_facts(settings, events.DATANET_CREATED, [created(1, store)])
    produce_facts(settings, events.CONTRIBUTION_SUBMITTED, [a, b])
    run1 = validate_new_offsets(settings)
    v1 = materialize.latest_version(materialize.dataset_uri(settings.lance_dir, 1))
    assert (v1.version, v1.run_id) == (run1.datanets[1].lance_version, run1.runs[0])
    assert {int(p): r for p, r in v1.offsets.items()} == {p: list(r) for p, r in run1.ranges.items()}

    # The dedupe history is a projection: throw it away and rebuild it from the log alone.
    shutil.rmtree(validate_dir(settings) / "runs")
    rebuild_state(settings)

    near = (mutate(first, 2) + "!!").upper().replace(" ", "  ")
    c = submitted(3, 1, store, near.encode())
    d = submitted(4, 1, store, second.encode())
    e = submitted(5, 1, store, text(5, 120).encode())
    produce_facts(settings, events.CONTRIBUTION_SUBMITTED, [c, d, e, a])
    produce_facts(settings, events.FACT_RETRACTED, [retracted(b, offset=0)])
    run2 = validate_new_offsets(settings)
    latest = {v["contribution_id"]: v for v in _read_topic(settings, topics.VERDICTS)}
    assert (latest[3]["reason"], latest[3]["duplicate_of"]) == (reasons.NEAR_DUPLICATE, 1)
    assert (latest[4]["reason"], latest[4]["duplicate_of"]) == (reasons.DUPLICATE, 2)
    assert latest[2]["reason"] == reasons.RETRACTED and run2.datanets[1].retracted_after_acceptance == 1
    assert run2.datanets[1].replayed == 1 and run2.submitted == 3
    assert [row[0] for row in _rows(settings, 1)] == [1, 5]
    assert [row[0] for row in _rows(settings, 1, v1.version)] == [1, 2], "earlier versions stay readable"

    # Replay from offset zero into empty projections, on two worker processes: same rows, same verdicts.
    rows_before = _rows(settings, 1)
    verdict_ids = {v["verdict_id"] for v in _read_topic(settings, topics.VERDICTS)}
    shutil.rmtree(settings.lance_dir)
    shutil.rmtree(validate_dir(settings))
    replay = validate_new_offsets(settings, pipeline_args=MULTI_PROCESS)
    assert _rows(settings, 1) == rows_before
    assert {v["verdict_id"] for v in _read_topic(settings, topics.VERDICTS)} == verdict_ids
    assert replay.submitted == run1.submitted + run2.submitted


@pytest.mark.parametrize("crash_in", ["commit", "checkpoint"])
def test_crash_between_side_effects_is_resumed_without_duplicates_or_gaps(settings, monkeypatch, crash_in):
    store = ContentStore(settings.content_dir)
    produce_facts(settings, events.DATANET_CREATED, [created(1, store)])
    produce_facts(settings, events.CONTRIBUTION_SUBMITTED,
             [submitted(cid, 1, store, text(cid).encode()) for cid in range(1, 6)])
    target = materialize if crash_in == "commit" else checkpoint
    real = getattr(target, crash_in if crash_in == "commit" else "save")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(target, real.__name__, crash)
    with pytest.raises(KeyboardInterrupt):
        validate_new_offsets(settings)
    assert checkpoint.load_intent(validate_dir(settings)) is not None
    monkeypatch.setattr(target, real.__name__, real)

    env = {"KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "PAYABLE_DATA_DIR": str(settings.data_dir)}
    result = CliRunner().invoke(main, ["validate"], env=env)
    assert result.exit_code == 0, result.output
    assert "resumed a crashed run" in result.output and "dn-1" in result.output
    dataset = lance.dataset(materialize.dataset_uri(settings.lance_dir, 1))
    assert dataset.version == 1, "exactly one version, whichever side the crash was"
    assert [row[0] for row in _rows(settings, 1)] == [1, 2, 3, 4, 5]
    verdicts = _read_topic(settings, topics.VERDICTS)
    assert len(verdicts) == 5, "verdicts were produced once"
    assert checkpoint.load_intent(validate_dir(settings)) is None
    assert validate_new_offsets(settings).runs == []
    assert CONTRIBUTION_VERDICT.to_batch(verdicts).num_rows == 5


def test_history_sketched_under_an_older_normalization_is_rebuilt_before_a_disguised_copy_is_decided(settings):
    store = ContentStore(settings.content_dir)
    original = text(1, 120)
    produce_facts(settings, events.DATANET_CREATED, [created(1, store)])
    produce_facts(settings, events.CONTRIBUTION_SUBMITTED, [submitted(1, 1, store, original.encode())])
    assert validate_new_offsets(settings).datanets[1].accepted == 1
    # Make the stored history look like one written before this normalization: other keys, no fingerprint.
    root = validate_dir(settings)
    state = checkpoint.load(root)
    (segment,) = state.segments[1]
    old = staging.read_table(segment)
    old = old.set_column(old.schema.get_field_index("norm_hash"), "norm_hash",
                         pa.array(["0" * 32] * old.num_rows, type=pa.string()))
    staging.write_table(segment, old)
    state.sketches = None
    checkpoint.save(root, state)

    copy = original.translate(str.maketrans("aeiopkm", "аеіорkм"))  # Cyrillic look-alikes, one edit: k stays
    produce_facts(settings, events.CONTRIBUTION_SUBMITTED, [submitted(2, 1, store, copy.encode())])
    report = validate_new_offsets(settings)
    assert report.rebuilt and not validate_new_offsets(settings).rebuilt
    latest = {v["contribution_id"]: v for v in _read_topic(settings, topics.VERDICTS)}
    assert (latest[2]["reason"], latest[2]["duplicate_of"]) == (reasons.DUPLICATE_NORMALIZED, 1)
    assert len([v for v in _read_topic(settings, topics.VERDICTS) if v["contribution_id"] == 1]) == 1, \
        "the rebuild published nothing"
    assert [row[0] for row in _rows(settings, 1)] == [1]
