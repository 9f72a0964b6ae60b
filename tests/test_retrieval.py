"""The retrieval index: a projection of the newest dataset version, hybrid search, slashed data excluded."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from payable.settings import Settings
from pipelines.retrieval import build_index, chunk_text, index_version, search
from pipelines.validate.materialize import commit, dataset_uri
from schemas.datasets import CONTRIBUTION_ROW

TEXTS = {
    1: "Mitochondria produce most of the cell's chemical energy as ATP through oxidative phosphorylation.",
    2: "Chloroplasts capture light energy; photosynthesis turns carbon dioxide and water into glucose.",
    3: "At sea level pure water boils at one hundred degrees Celsius, lower on a high mountain.",
    4: "The Krebs cycle oxidises acetyl-CoA inside the mitochondrial matrix, feeding the electron chain.",
}


def _rows(ids: list[int], version_tag: str) -> pa.Table:
    return pa.Table.from_pylist([
        {"contribution_id": c, "datanet_id": 1, "contributor": f"0x{c:040x}", "content_hash": f"0x{c:064x}",
         "text": TEXTS[c], "size": len(TEXTS[c]), "block_number": c, "fact_event_id": f"f{c}",
         "verdict_id": f"v{c}-{version_tag}"} for c in ids], schema=CONTRIBUTION_ROW)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return replace(Settings.from_env(tmp_path / "data"), kafka_bootstrap="127.0.0.1:9")  # no broker needed


def test_chunks_overlap_and_cover_every_word() -> None:
    text = " ".join(f"w{i}" for i in range(250))
    chunks = chunk_text(text, words=100, overlap=20)
    assert [c.index for c in chunks] == [0, 1, 2]
    assert chunks[1].text.split()[0] == "w80" and chunks[-1].text.split()[-1] == "w249"
    assert chunk_text("   ") == []
    with pytest.raises(ValueError):
        chunk_text(text, words=10, overlap=10)


def test_index_names_its_dataset_version_and_finds_the_right_source(settings: Settings) -> None:
    uri = dataset_uri(settings.lance_dir, 1)
    version = commit(uri, _rows([1, 2, 3], "a"), [], run_id="r1", offsets={0: (0, 3)})
    built = build_index(settings, 1, slashed=set())
    assert (built.dataset_version, built.contributions, built.chunks) == (version, 3, 3)
    assert index_version(settings, 1) == built
    top = search(settings, [1], "at what temperature does water boil?", k=2)
    assert top[0].contribution_id == 3 and top[0].dataset_version == version
    assert top[0].score >= top[1].score
    assert build_index(settings, 1, slashed=set()) == built  # nothing moved: no rebuild
    # full-text syntax in a user's question is text, not a query language
    assert search(settings, [1], 'what\'s "water"? (boils) AND: -x +y ~ ^2 \\', k=1)[0].contribution_id == 3


def test_slashed_and_removed_contributions_are_never_retrievable(settings: Settings) -> None:
    uri = dataset_uri(settings.lance_dir, 1)
    commit(uri, _rows([1, 2, 3], "a"), [], run_id="r1", offsets={0: (0, 3)})
    build_index(settings, 1, slashed=set())
    # a new version adds 4 and retracts 3 (its verdict removed); 1 is slashed on-chain
    version = commit(uri, _rows([4], "b"), ["v3-a"], run_id="r2", offsets={0: (3, 5)})
    rebuilt = build_index(settings, 1, slashed={1})
    assert rebuilt.dataset_version == version and rebuilt.contributions == 2
    found = {s.contribution_id for s in search(settings, [1], "mitochondria energy water boils", k=10)}
    assert found == {2, 4}


def test_datanet_without_index_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(LookupError, match="no retrieval index"):
        search(settings, [7], "anything")
    with pytest.raises(LookupError, match="no dataset yet"):
        build_index(settings, 7, slashed=set())


def test_the_dagster_asset_indexes_every_datanet_without_slashed_stakes(stack: Settings) -> None:
    """Through the asset as the loop runs it: the slashed set comes from the log's StakeSlashed facts."""
    import dagster as dg

    from assets.retrieval import retrieval_index
    from orchestration.resources import DataDirResource, KafkaResource
    from payable import kafka_log
    from schemas import events, topics

    commit(dataset_uri(stack.lance_dir, 1), _rows([1, 2, 3], "a"), [], run_id="r1", offsets={0: (0, 3)})
    other = _rows([4], "a").set_column(1, "datanet_id", pa.array([2], pa.int64()))  # contribution ids are global
    commit(dataset_uri(stack.lance_dir, 2), other, [], run_id="r1", offsets={0: (3, 4)})
    kafka_log.ensure_topics(stack.kafka_bootstrap, [topics.CHAIN_FACTS])
    producer = kafka_log.make_producer(stack.kafka_bootstrap)
    slash = {"event_id": "slash-2", "chain_id": 31337, "block_number": 9, "block_hash": "0x" + "00" * 32,
             "tx_hash": "0x" + "11" * 32, "log_index": 0, "contract": "0x" + "33" * 20, "contribution_id": 2,
             "datanet_id": 1, "validator": "0x" + "22" * 20, "reason_code": 1, "amount": "1"}
    record = {name: slash.get(name) for name in events.STAKE_SLASHED.schema.names}
    kafka_log.produce(producer, events.STAKE_SLASHED, [record], key=lambda r: b"dn-1")
    producer.flush()
    producer.close()
    result = dg.materialize([retrieval_index], resources={
        "data_dir": DataDirResource(path=str(stack.data_dir)), "kafka": KafkaResource(bootstrap=stack.kafka_bootstrap)})
    assert result.asset_materializations_for_node("retrieval_index")[0].metadata["datanets"].value == 2
    assert {s.contribution_id for s in search(stack, [1], "energy water light", k=10)} == {1, 3}
    assert {s.contribution_id for s in search(stack, [2], "energy water light", k=10)} == {4}
