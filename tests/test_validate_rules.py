"""Per-contribution rules and text sketches, without a runner, a broker or a Lance file."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from payable import services
from payable.content_store import ContentStore
from payable.datanets import DatanetSpec
from pipelines.validate import normalize, reasons
from pipelines.validate.candidates import check_chunk
from pipelines.validate.config import ValidateConfig
from pipelines.validate.datanet_info import DatanetInfo, resolve
from pipelines.validate.rules import check_submission
from pipelines.validate.sketch import jaccard, sketch
from tests.test_validate_support import created, info, mutate, submitted, text

CONFIG = ValidateConfig()
JSONL = DatanetSpec("qa", "jsonl", ("question", "answer"))


@pytest.fixture
def store(tmp_path) -> ContentStore:
    return ContentStore(tmp_path / "content")


_DEFAULT = info(1)


def _reason(store: ContentStore, fact: dict, datanet: DatanetInfo | None = _DEFAULT) -> str | None:
    return check_submission(fact, datanet, store, CONFIG.max_size_cap).reason


def test_valid_text_passes_and_keeps_its_text(store):
    result = check_submission(submitted(1, 1, store, b"some words here"), info(1), store, CONFIG.max_size_cap)
    assert (result.reason, result.text) == (None, "some words here")


def test_unknown_datanet(store):
    fact = submitted(1, 1, store, b"some words")
    assert _reason(store, fact, None) == reasons.UNKNOWN_DATANET
    later = DatanetInfo(1, 100, DatanetSpec("x"), "", 0, fact["_offset"] + 1)
    assert _reason(store, fact, later) == reasons.UNKNOWN_DATANET, "created after the contribution"


def test_unreadable_datanet_spec(store):
    broken = resolve(created(1, store, metadata_uri="cas://sha256/" + "00" * 32), store)
    assert broken.spec is None and "content_missing" in broken.spec_error
    assert _reason(store, submitted(2, 1, store, b"some words"), broken) == reasons.DATANET_SPEC_INVALID


@pytest.mark.parametrize("uri, reason", [
    ("cas://sha256/" + "ab" * 32, reasons.FETCH_CONTENT_MISSING),
    ("cas://sha256/nothex", reasons.FETCH_BAD_URI),
    ("ftp://example.org/x", reasons.FETCH_UNSUPPORTED_URI),
])
def test_fetch_failures(store, uri, reason):
    assert _reason(store, submitted(1, 1, None, b"abc", uri=uri)) == reason


def test_fetch_failed_when_the_host_refuses(store):
    uri = f"http://127.0.0.1:{services.free_port()}/content"
    assert _reason(store, submitted(1, 1, None, b"abc", uri=uri)) == reasons.FETCH_FAILED


def test_hash_size_and_limits(store):
    assert _reason(store, submitted(1, 1, store, b"some words", content_hash="0x" + "00" * 32)) == reasons.HASH_MISMATCH
    assert _reason(store, submitted(2, 1, store, b"some words", size=9)) == reasons.SIZE_MISMATCH
    big = b"word " * 30
    assert _reason(store, submitted(3, 1, store, big), info(1, max_size=100)) == reasons.TOO_LARGE
    lied = submitted(4, 1, store, big, size=50)
    assert _reason(store, lied, info(1, max_size=100)) == reasons.TOO_LARGE, "declared small, content large"


def test_not_utf8(store):
    assert _reason(store, submitted(1, 1, store, b"caf\xe9 au lait")) == reasons.NOT_UTF8


@pytest.mark.parametrize("content, reason", [
    (b'{"question": "q", "answer": "a"}\n\n{"question": "r", "answer": "b"}\n', None),
    (b'{"question": "q", "answer": "a"}\n{"question": \n', reasons.INVALID_JSONL),
    (b'["question", "answer"]\n', reasons.INVALID_JSONL),
    (b'{"question": "q", "answer": "a"}\n{"question": "q"}\n', reasons.MISSING_FIELDS),
])
def test_jsonl_records_and_required_fields(store, content, reason):
    assert _reason(store, submitted(1, 1, store, content), info(1, JSONL)) == reason


def test_empty_and_near_empty_are_rejected_after_normalization(store):
    facts = [submitted(1, 1, store, b"   \n\t "), submitted(2, 1, store, b"!!! ok ... fine ?"),
             submitted(3, 1, store, b"five words are enough here")]
    batch = check_chunk(facts, {1: info(1)}, store, CONFIG)
    assert batch.column("reason").to_pylist() == [reasons.EMPTY, reasons.EMPTY, None]
    assert batch.column("shingles").to_pylist()[0] == [] and len(batch.column("shingles").to_pylist()[2]) == 3


def test_normalized_hash_ignores_whitespace_case_and_punctuation():
    variants = ["The quick brown fox, jumps!", "the   QUICK brown\tfox jumps", "The quick-brown fox... jumps",
                "The quick brown fox — jumps “”", "ｔｈｅ quick brown fox jumps"]  # fullwidth letters: NFKC
    hashes = sketch(variants, CONFIG).norm_hashes
    assert len(set(hashes)) == 1
    assert sketch(["the quick brown fox jumped"], CONFIG).norm_hashes[0] != hashes[0]


def test_dedupe_key_folds_look_alikes_invisibles_compatibility_forms_accents_and_case():
    key = normalize.dedupe_key
    assert key("Pаypаl") == key("paypal"), "Cyrillic а"
    assert key("\u03a1\u0391\u0423\u03a1\u0391L") == key("paypal") == key("PAYPAL"), "Greek Ρ Α, Cyrillic У; case"
    assert key("pay\u200bpal\u202e \u2066x\u2069") == key("paypal x"), "zero-width and bidi controls vanish"
    assert key("ｐａｙｐａｌ 𝐩𝐚𝐲 ﬁne") == key("paypal pay fine"), "fullwidth, mathematical bold, ligature"
    assert key("café naïve") == key("cafe naive") == key("cafe\u0301 nai\u0308ve"), "accents, either form"
    assert key("heIIo") == key("hello"), "capital I looks like l"
    assert key("a — b, c!").split() == ["a", "b", "c"], "punctuation separates, whatever its prototype"


def test_dedupe_key_keeps_distinct_greek_and_cyrillic_words_distinct():
    russian = ["дом", "дым", "дам", "дум", "мир", "мор", "мер", "кот", "кит", "кто", "сон", "сын", "сан",
               "лес", "лис", "лук", "лак"]
    greek = ["λόγος", "λύκος", "νόμος", "νότος", "φως", "φύση", "ψυχή", "ψάρι", "χώρα", "χορός", "καιρός", "κόσμος"]
    for words in (russian, greek):
        keys = [normalize.dedupe_key(w) for w in words]
        assert len(set(keys)) == len(words), dict(zip(words, keys, strict=True))
    assert normalize.dedupe_key("ПРИВЕТ МИР") == normalize.dedupe_key("привет мир")


def test_normalization_version_changes_verdict_ids_and_marks_the_stored_sketches(monkeypatch):
    before = ValidateConfig().fingerprint, ValidateConfig().sketch_fingerprint
    monkeypatch.setattr(normalize, "VERSION", normalize.VERSION + "-next")
    after = ValidateConfig()
    assert after.fingerprint != before[0] and after.sketch_fingerprint != before[1]
    assert ValidateConfig(near_threshold=0.9).sketch_fingerprint == after.sketch_fingerprint, \
        "only what shapes the stored sketches"


def test_minhash_agreement_estimates_jaccard():
    rng = random.Random(3)
    pairs = [(text(i, 200), mutate(text(i, 200), rng.randrange(0, 60), seed=i)) for i in range(60)]
    sk = sketch([t for pair in pairs for t in pair], CONFIG)
    exact = np.array([jaccard(sk.shingles_of(2 * i), sk.shingles_of(2 * i + 1)) for i in range(len(pairs))])
    agree = (sk.signatures[0::2] == sk.signatures[1::2]).mean(axis=1)
    assert exact.min() < 0.4 and exact.max() > 0.95, "the sample spans low to high similarity"
    assert np.abs(agree - exact).mean() < 0.05
    assert np.corrcoef(agree, exact)[0, 1] > 0.97


def test_unrelated_texts_share_no_band_and_near_duplicates_do():
    sk = sketch([text(1, 150), text(2, 150), mutate(text(1, 150), 3)], CONFIG)
    assert not np.intersect1d(sk.band_keys[0], sk.band_keys[1]).size
    assert np.intersect1d(sk.band_keys[0], sk.band_keys[2]).size >= 2


def test_sketch_is_deterministic_and_chunking_independent():
    texts = [text(i) for i in range(20)]
    whole = sketch(texts, CONFIG)
    halves = [sketch(texts[:7], CONFIG), sketch(texts[7:], CONFIG)]
    assert np.array_equal(whole.band_keys, np.vstack([h.band_keys for h in halves]))
    assert whole.norm_hashes == halves[0].norm_hashes + halves[1].norm_hashes


def test_datanet_info_round_trips_through_json(store):
    resolved = resolve(created(5, store, JSONL, max_size=123), store)
    assert DatanetInfo.from_json(json.loads(json.dumps(resolved.to_json()))) == resolved
    assert resolved.spec == JSONL and resolved.max_size == 123
