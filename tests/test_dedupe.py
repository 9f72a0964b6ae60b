"""Deduplication decisions in chain order against a datanet's history, without a runner."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from payable.content_store import ContentStore
from pipelines.validate import disguises, reasons
from pipelines.validate.candidates import check_chunk
from pipelines.validate.config import ValidateConfig
from pipelines.validate.dedupe import Decision, decide_datanet
from pipelines.validate.state import DedupeState
from tests.test_validate_support import info, mutate, retracted, submitted, text

CONFIG = ValidateConfig()


@pytest.fixture
def store(tmp_path) -> ContentStore:
    return ContentStore(tmp_path / "content")


def _decide(store, facts, history=None, retractions=(), config=CONFIG) -> Decision:
    batch = check_chunk(facts, {1: info(1)}, store, config)
    return decide_datanet(history or DedupeState(), pa.Table.from_batches([batch]), list(retractions), config)


def _outcomes(decision: Decision) -> dict[int, tuple[str | None, int | None]]:
    return {v["contribution_id"]: (v["reason"], v["duplicate_of"]) for v in decision.verdicts}


def test_exact_normalized_and_near_duplicates_first_in_chain_order_wins(store):
    original = text(1, 120)
    facts = [
        submitted(1, 1, store, original.encode()),
        submitted(2, 1, store, text(2, 120).encode()),
        submitted(3, 1, store, original.encode()),
        submitted(4, 1, store, ("  " + original.upper().replace(" ", " ,  ") + "!").encode()),
        submitted(5, 1, store, mutate(original, 4).encode()),
        submitted(6, 1, store, mutate(original, 40).encode()),
    ]
    random.Random(0).shuffle(facts)  # arrival order within a batch must not matter; chain order does
    decision = _decide(store, facts)
    outcome = _outcomes(decision)
    assert outcome[1] == (None, None) and outcome[2] == (None, None) and outcome[6] == (None, None)
    assert outcome[3] == (reasons.DUPLICATE, 1)
    assert outcome[4] == (reasons.DUPLICATE_NORMALIZED, 1)
    assert outcome[5] == (reasons.NEAR_DUPLICATE, 1)
    near = next(v for v in decision.verdicts if v["contribution_id"] == 5)
    assert near["penalize"] and 0.8 <= near["similarity"] < 1.0 and "duplicate_of=1" in near["detail"]
    assert sorted(decision.rows.column("contribution_id").to_pylist()) == [1, 2, 6]


def test_duplicates_are_caught_across_runs_through_the_history(store):
    first = _decide(store, [submitted(1, 1, store, text(1, 120).encode()),
                            submitted(2, 1, store, text(2, 120).encode())])
    history = DedupeState(first.segment)
    later = [submitted(3, 1, store, text(2, 120).encode(), offset=10),
             submitted(4, 1, store, (mutate(text(1, 120), 3) + " .").title().encode(), offset=11),
             submitted(5, 1, store, text(3, 120).encode(), offset=12)]
    assert _outcomes(_decide(store, later, history)) == {
        3: (reasons.DUPLICATE, 2), 4: (reasons.NEAR_DUPLICATE, 1), 5: (None, None)}


def test_threshold_is_configurable(store):
    original, similar = text(1, 100), mutate(text(1, 100), 2)
    facts = [submitted(1, 1, store, original.encode()), submitted(2, 1, store, similar.encode())]
    assert _outcomes(_decide(store, facts))[2][0] == reasons.NEAR_DUPLICATE
    assert _outcomes(_decide(store, facts, config=ValidateConfig(near_threshold=0.97)))[2] == (None, None)


def test_retraction_removes_an_accepted_row_and_frees_its_content(store):
    kept = submitted(1, 1, store, text(1, 100).encode())
    first = _decide(store, [kept])
    accepted_verdict = first.verdicts[0]["verdict_id"]
    second = _decide(store, [], DedupeState(first.segment), [retracted(kept, offset=5)])
    assert second.removed == [accepted_verdict]
    assert [(v["contribution_id"], v["status"], v["reason"]) for v in second.verdicts] == [
        (1, reasons.REJECTED, reasons.RETRACTED)]
    history = DedupeState(pa.concat_tables([first.segment, second.segment]))
    resubmitted = _decide(store, [submitted(2, 1, store, text(1, 100).encode(), offset=9)], history)
    assert _outcomes(resubmitted) == {2: (None, None)}, "a retracted original no longer blocks its content"


def test_retraction_before_or_within_a_run_keeps_the_fact_out(store):
    fact = submitted(1, 1, store, text(1, 100).encode(), offset=3)
    early = _decide(store, [fact], retractions=[retracted(fact, offset=1)])
    assert _outcomes(early) == {1: (reasons.RETRACTED, None)} and early.rows.num_rows == 0
    within = _decide(store, [fact], retractions=[retracted(fact, offset=4)])
    assert [v["status"] for v in within.verdicts] == [reasons.ACCEPTED, reasons.REJECTED]
    assert within.rows.num_rows == 0 and within.removed == []


def test_replayed_facts_change_nothing(store):
    facts = [submitted(1, 1, store, text(1).encode()), submitted(2, 1, store, text(2).encode())]
    first = _decide(store, facts)
    again = _decide(store, [facts[0] | {"_offset": 50}, facts[1] | {"_offset": 51}], DedupeState(first.segment))
    assert again.verdicts == [] and again.replayed == 2 and again.rows.num_rows == 0
    twice = _decide(store, [facts[0], facts[0] | {"_offset": 7}])
    assert len(twice.verdicts) == 1 and twice.replayed == 1


def test_reorged_fact_in_a_new_block_is_a_new_fact(store):
    content = text(1, 100).encode()
    old = submitted(1, 1, store, content, offset=1)
    new = submitted(1, 1, store, content, offset=3, block_hash="0x" + "cd" * 32)
    decision = _decide(store, [old, new], retractions=[retracted(old, offset=2)])
    assert [(v["fact_block_hash"][-2:], v["reason"]) for v in decision.verdicts] == [
        ("ab", None), ("ab", reasons.RETRACTED), ("cd", None)]
    assert decision.rows.column("verdict_id").to_pylist() == [decision.verdicts[2]["verdict_id"]]


def test_one_run_or_many_runs_decide_the_same(store):
    rng = random.Random(7)
    facts = []
    for cid in range(1, 41):
        source = text(rng.randrange(12), 80)
        content = source if rng.random() < 0.3 else mutate(source, rng.randrange(0, 12), seed=cid)
        facts.append(submitted(cid, 1, store, content.encode()))
    retractions = [retracted(facts[4], offset=20), retracted(facts[30], offset=35)]
    whole = _decide(store, facts, retractions=retractions)
    history, parts = DedupeState(), []
    for lo, hi in ((0, 13), (13, 27), (27, 41)):
        part = _decide(store, facts[lo:hi], history, [r for r in retractions if lo < r["_offset"] + 1 <= hi])
        parts.append(part)
        history = DedupeState(pa.concat_tables([p.segment for p in parts]))
    assert [v["verdict_id"] for v in whole.verdicts] == [v["verdict_id"] for p in parts for v in p.verdicts]
    live = {row for p in parts for row in p.rows.column("verdict_id").to_pylist()} - {
        removed for p in parts for removed in p.removed}
    assert sorted(whole.rows.column("verdict_id").to_pylist()) == sorted(live)
    assert len({v["reason"] for v in whole.verdicts}) >= 4, "the sample exercises several outcomes"


# The incident: Latin letters of an accepted text retyped as the Cyrillic letters that look the same.
CYRILLIC_LOOK_ALIKES = str.maketrans("aceopxyiTHBKM", "асеорхуіТНВКМ")  # right: CYRILLIC letters
SENTENCE = ("The researchers measured the pressure of the gas at room temperature and compared it with "
            "earlier experiments on heat capacity. They found that the pressure rose steadily as the "
            "temperature increased, which matches the ideal gas law within the error of the instrument. ")
DISGUISES = {
    "homoglyph, hand-typed": lambda t, rng: t.translate(CYRILLIC_LOOK_ALIKES),
    "homoglyph, confusables data": lambda t, rng: disguises.homoglyphs(t, rng),
    "zero-width and bidi controls": lambda t, rng: disguises.invisible(t, rng, per_word=1.0),
    "fullwidth and compatibility forms": lambda t, rng: disguises.compatibility(t, rng, per_word=1.0),
    "diacritics added": lambda t, rng: disguises.add_diacritics(t, rng),
    "all at once, case changed": disguises.combined,
}


@pytest.mark.parametrize("form", sorted(DISGUISES))
def test_a_disguised_copy_of_an_earlier_runs_text_is_a_normalized_duplicate(store, form):
    original = SENTENCE * 2
    first = _decide(store, [submitted(1, 1, store, original.encode())])
    copy = DISGUISES[form](original, random.Random(5))
    assert copy != original and copy.encode() != original.encode()
    later = _decide(store, [submitted(2, 1, store, copy.encode(), offset=10)], DedupeState(first.segment))
    assert _outcomes(later) == {2: (reasons.DUPLICATE_NORMALIZED, 1)}
    assert later.verdicts[0]["penalize"] and later.rows.num_rows == 0


def test_stripping_the_accents_of_an_accepted_text_is_a_normalized_duplicate(store):
    original = ("Le café où nous déjeunâmes était célèbre pour sa crème brûlée et ses crêpes à la châtaigne. "
                "Ærøskøbing, Łódź and São Tomé appear on the menu's façade, naïvely spelt. ")
    first = _decide(store, [submitted(1, 1, store, original.encode())])
    stripped = disguises.strip_diacritics(original)
    assert stripped.isascii() is False and "cafe" in stripped
    later = _decide(store, [submitted(2, 1, store, stripped.encode(), offset=10)], DedupeState(first.segment))
    assert _outcomes(later) == {2: (reasons.DUPLICATE_NORMALIZED, 1)}


def test_a_disguised_copy_with_words_changed_is_a_near_duplicate_across_runs(store):
    original = text(1, 120)
    first = _decide(store, [submitted(1, 1, store, original.encode())])
    copy = disguises.combined(mutate(original, 4), random.Random(2))
    later = _decide(store, [submitted(2, 1, store, copy.encode(), offset=10)], DedupeState(first.segment))
    assert _outcomes(later) == {2: (reasons.NEAR_DUPLICATE, 1)}


def test_distinct_greek_and_cyrillic_texts_are_not_collapsed(store):
    russian = ["Кошка спит на тёплом окне и смотрит на птиц во дворе, пока хозяйка варит суп на кухне.",
               "Собака бежит по снегу и лает на прохожих у ворот, а мальчик зовёт её домой ужинать.",
               "Учёные измерили давление газа при комнатной температуре и сравнили его с прежними опытами."]
    greek = ["Ο ήλιος λάμπει πάνω από τη θάλασσα το πρωί και οι ψαράδες βγαίνουν με τις βάρκες τους.",
             "Η βροχή πέφτει στα βουνά όλη τη νύχτα και τα ποτάμια γεμίζουν νερό μέχρι την αυγή.",
             "Οι επιστήμονες μέτρησαν την πίεση του αερίου σε θερμοκρασία δωματίου και τη σύγκριναν."]
    facts = [submitted(i, 1, store, t.encode()) for i, t in enumerate(russian + greek, start=1)]
    upper = submitted(7, 1, store, russian[0].upper().encode())  # the same Russian text in capitals
    decision = _decide(store, [*facts, upper])
    assert _outcomes(decision) == {**{i: (None, None) for i in range(1, 7)}, 7: (reasons.DUPLICATE_NORMALIZED, 1)}
    stored = dict(zip(decision.rows.column("contribution_id").to_pylist(),
                      decision.rows.column("text").to_pylist(), strict=True))
    assert stored[1] == russian[0] and stored[4] == greek[0], "the key is for deduplication only"
