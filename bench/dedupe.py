"""Dedupe benchmark: payable's validate + exact + near-duplicate path against datasketch, side by side.

Generates N text contributions of about 1 KB (synthetic Zipf-distributed vocabulary) with a known 10%
exact duplicates and 10% planted near-duplicates whose true Jaccard similarity (word 3-gram sets of the
normalized text, computed here by a plain-Python reference independent of payable's numpy code) lies
in [0.8, 0.95]; half of the near-duplicates also get case and punctuation noise. Then, in one run:

* payable: the functions the Beam pipeline runs (CheckAndSketch per chunk: fetch from the content
  store, sha256 check, size, UTF-8, normalization, MinHash; then DecidePerDatanet: exact, normalized
  and near-duplicate decisions in chain order), timed end to end, Kafka and Beam scheduling excluded;
* datasketch: MinHash(num_perm=128) + MinHashLSH(threshold) query-then-insert over the same texts
  after exact-duplicate removal (the same near-duplicate job), normalization + shingling included;
* precision and recall of each against the planted near-duplicates;
* disguised duplicates (``pipelines.validate.disguises``), decided in a second run against the first
  run's history as a later validate run would: ``--per-form`` copies of earlier texts per form
  (homoglyphs, zero-width and bidi controls, fullwidth/compatibility forms, diacritics stripped from
  accented originals, diacritics added, all combined, all combined plus 3 words changed). Recall per
  form = copies rejected as a duplicate *of their original*; the false-positive rate is measured on
  fresh distinct texts in Latin, Cyrillic and Greek letters decided in the same second run;
* the cost of the dedupe key itself (``normalize.keys``) in microseconds per KB, per script.

Writes ``bench/out/dedupe.json``.

    .venv/bin/python -m bench.dedupe --n 100000      (from the repository root)
    .venv/bin/python -m bench.dedupe --n 20000 --runner dask --workers 2 --per-form 0 --skip-datasketch

``--runner dask --workers N`` runs the per-chunk stage as a Beam pipeline on a local Dask cluster of N
worker processes (``bench/runner.py``); without ``--runner``, ``--workers`` processes of a process pool.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import re
import shlex
import sys
import tempfile
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.options.pipeline_options import PipelineOptions

from bench.runner import add_runner_arguments, beam_runner, cpu_seconds, load_average
from payable.content_store import ContentStore
from payable.datanets import DatanetSpec
from pipelines.validate import disguises, normalize, reasons, staging
from pipelines.validate.candidates import check_chunk
from pipelines.validate.config import ValidateConfig
from pipelines.validate.datanet_info import DatanetInfo
from pipelines.validate.dedupe import Decision, decide_datanet
from pipelines.validate.state import DedupeState

OUT = Path(__file__).resolve().parent / "out"
WORD = re.compile(r"[^\W_]+")
VOCABULARY = 30_000
WORDS_PER_TEXT = 150
PUNCTUATION = [",", ".", ";", "!", "?", " -", ":"]
ALPHABETS = {"latin": "abcdefghijklmnopqrstuvwxyz", "cyrillic": "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
             "greek": "αβγδεζηθικλμνξοπρστυφχψωάέήίόύώ"}
FORMS = {
    "homoglyph (every look-alike letter)": lambda t, rng: disguises.homoglyphs(t, rng),
    "homoglyph (half of them)": lambda t, rng: disguises.homoglyphs(t, rng, 0.5),
    "zero-width + bidi controls": lambda t, rng: disguises.invisible(t, rng),
    "fullwidth / compatibility forms": lambda t, rng: disguises.compatibility(t, rng),
    "diacritics stripped": lambda t, rng: disguises.strip_diacritics(t),  # of an accented original
    "diacritics added": lambda t, rng: disguises.add_diacritics(t, rng),
    "combined, case kept": lambda t, rng: disguises.combined(t, rng, title=False),
    "combined, title case": disguises.combined,
    "combined, case kept, + 3 words changed": lambda t, rng: disguises.combined(_replace_words(t, 3, rng), rng,
                                                                                 title=False),
    "combined, title case, + 3 words changed": lambda t, rng: disguises.combined(_replace_words(t, 3, rng), rng),
}


@dataclass
class Corpus:
    texts: list[str]
    kind: list[str]  # original | exact | near
    source: list[int]  # index of the original a duplicate copies, else -1
    similarity: list[float]  # true Jaccard of planted near-duplicates, else nan


def shingle_set(text: str, k: int = 3) -> set[tuple[str, ...]]:
    """Reference definition of near-duplication: word k-gram set of the lower-cased alphanumeric words."""
    words = WORD.findall(text.lower())
    return {tuple(words[i:i + k]) for i in range(len(words) - k + 1)}


def reference_jaccard(a: str, b: str) -> float:
    sa, sb = shingle_set(a), shingle_set(b)
    return len(sa & sb) / len(sa | sb)


def generate(n: int, seed: int) -> Corpus:
    """Originals first, then exact and near duplicates of earlier originals interleaved at random."""
    rng = np.random.default_rng(seed)
    vocabulary = make_vocabulary(rng, ALPHABETS["latin"])
    n_exact = n_near = n // 10
    n_original = n - n_exact - n_near
    texts = distinct_texts(rng, vocabulary, n_original)
    kind, source, similarity = ["original"] * n_original, [-1] * n_original, [float("nan")] * n_original
    for copy in rng.permutation(np.r_[np.zeros(n_exact, int), np.ones(n_near, int)]).tolist():
        origin = int(rng.integers(0, n_original))
        if copy == 0:
            texts.append(texts[origin])
            kind.append("exact")
            similarity.append(1.0)
        else:
            text, jac = _near(texts[origin], vocabulary, rng)
            texts.append(text)
            kind.append("near")
            similarity.append(jac)
        source.append(origin)
    return Corpus(texts, kind, source, similarity)


def make_vocabulary(rng: np.random.Generator, alphabet: str) -> list[str]:
    letters = np.array(list(alphabet))
    return ["".join(rng.choice(letters, size=rng.integers(3, 9))) for _ in range(VOCABULARY)]


def distinct_texts(rng: np.random.Generator, vocabulary: list[str], n: int) -> list[str]:
    """``n`` texts of Zipf-distributed words: as alike as unrelated texts on one topic get."""
    weights = 1.0 / np.arange(1, len(vocabulary) + 1) ** 1.1
    ids = rng.choice(len(vocabulary), size=(n, WORDS_PER_TEXT), p=weights / weights.sum())
    return [" ".join(vocabulary[i] for i in row) for row in ids.tolist()]


def _replace_words(text: str, count: int, rng: random.Random) -> str:
    words = text.split(" ")
    for index in rng.sample(range(len(words)), count):
        words[index] = f"new{rng.randrange(10**6)}"
    return " ".join(words)


def _near(original: str, vocabulary: list[str], rng: np.random.Generator) -> tuple[str, float]:
    """A copy with words replaced until its reference Jaccard falls in [0.8, 0.95]; maybe with noise."""
    words = original.split()
    target = rng.uniform(0.8, 0.95)
    replaced = max(1, round(len(words) * (1 - target) / (1 + target) / 3))
    while True:
        candidate = list(words)
        for index in rng.choice(len(words), size=replaced, replace=False).tolist():
            candidate[index] = vocabulary[int(rng.integers(0, VOCABULARY))] + "x"
        text = " ".join(candidate)
        jac = reference_jaccard(original, text)
        if 0.8 <= jac <= 0.95:
            break
        replaced = max(1, replaced + (1 if jac > 0.95 else -1))
    if rng.random() < 0.5:  # case and punctuation noise: invisible after normalization
        noisy = [w.upper() if rng.random() < 0.2 else w for w in text.split()]
        text = " ".join(w + PUNCTUATION[int(rng.integers(0, len(PUNCTUATION)))] if rng.random() < 0.1 else w
                        for w in noisy)
    return text, jac


def store_texts(texts: list[str], root: Path, first: int = 0) -> list[dict]:
    """Puts every text in a content store; returns ContributionSubmitted facts in chain order from ``first``."""
    store = ContentStore(root)
    facts = []
    for i, text in enumerate(texts, start=first):
        data = text.encode()
        digest, uri = store.put(data)
        facts.append({"event_id": f"1:0x{i:064x}:0", "block_hash": "0x" + "ab" * 32, "chain_id": 1,
                      "block_number": i, "tx_hash": f"0x{i:064x}", "log_index": 0, "contract": "0x" + "11" * 20,
                      "contribution_id": i + 1, "datanet_id": 1, "contributor": "0x" + "22" * 20,
                      "content_hash": digest, "uri": uri, "size": len(data), "stake": "1",
                      "_partition": 0, "_offset": i})
    return facts


def _check(args: tuple) -> pa.RecordBatch:
    facts, datanets, root, config = args
    return check_chunk(facts, datanets, ContentStore(root), config)


def _stage(indexed: tuple[int, tuple], out: str) -> None:
    index, job = indexed
    staging.write_table(staging.join(out, f"{index:08d}.arrow"), pa.Table.from_batches([_check(job)]))


def check_on_beam(jobs: list[tuple], options: list[str], out: str) -> list[pa.RecordBatch]:
    """The per-chunk stage as a Beam pipeline on the chosen runner: one element per chunk, each checked
    batch staged as a file (as validate stages its outputs) and read back in chunk order."""
    with beam.Pipeline(options=PipelineOptions(options)) as pipeline:
        _ = (pipeline | beam.Create(list(enumerate(jobs))) | beam.Reshuffle() | beam.Map(_stage, out))
    return [batch for path in staging.glob(staging.join(out, "*.arrow"))
            for batch in staging.read_table(path).to_batches()]


def _warm_up() -> None:
    """What a long-running worker did long ago: import Beam's worker side, build the code-point table."""
    import apache_beam.runners.common  # noqa: F401 - the import is the point

    normalize.keys(["build the code-point table"])


def run_payable(facts: list[dict], root: Path, config: ValidateConfig, workers: int, chunk: int,
                history: DedupeState | None = None, beam_options: list[str] | None = None
                ) -> tuple[float, Decision]:
    """Seconds for CheckAndSketch over chunks (``workers`` processes, or a Beam pipeline run with
    ``beam_options``) + DecidePerDatanet, and the decision."""
    datanets = {1: DatanetInfo(1, 16_384, DatanetSpec("bench"), "", 0, -1)}
    jobs = [(facts[i:i + chunk], datanets, root, config) for i in range(0, len(facts), chunk)]
    start = time.perf_counter()
    if beam_options is not None:
        with tempfile.TemporaryDirectory(prefix="dedupe-checked-") as out:
            batches = check_on_beam(jobs, beam_options, out)
    elif workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            batches = list(pool.map(_check, jobs))
    else:
        batches = [_check(job) for job in jobs]
    decision = decide_datanet(history or DedupeState(), pa.Table.from_batches(batches), [], config)
    return time.perf_counter() - start, decision


def run_datasketch(texts: list[str], threshold: float, num_perm: int) -> tuple[float, list[bool]]:
    """Seconds for exact-hash removal + MinHashLSH query-then-insert; near-duplicate flag per text."""
    from datasketch import MinHash, MinHashLSH

    start = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    seen: set[bytes] = set()
    flagged = [False] * len(texts)
    for i, text in enumerate(texts):
        digest = hashlib.sha256(text.encode()).digest()
        if digest in seen:
            continue
        seen.add(digest)
        words = WORD.findall(text.lower())
        minhash = MinHash(num_perm=num_perm)
        minhash.update_batch([" ".join(words[j:j + 3]).encode() for j in range(len(words) - 2)])
        if lsh.query(minhash):
            flagged[i] = True
        else:
            lsh.insert(str(i), minhash)
    return time.perf_counter() - start, flagged


def precision_recall(flagged: list[bool], corpus: Corpus) -> tuple[float, float]:
    truth = [kind == "near" for kind in corpus.kind]
    candidates = [i for i, kind in enumerate(corpus.kind) if kind != "exact"]
    tp = sum(flagged[i] and truth[i] for i in candidates)
    fp = sum(flagged[i] and not truth[i] for i in candidates)
    fn = sum(truth[i] and not flagged[i] for i in candidates)
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="contributions (default 100,000)")
    parser.add_argument("--threshold", type=float, default=0.8)
    add_runner_arguments(parser)  # --runner: the per-chunk stage on Beam; without it, --workers processes
    parser.add_argument("--chunk", type=int, default=2000, help="contributions per chunk (a Beam element)")
    parser.add_argument("--num-perm", type=int, default=128, help="datasketch permutations")
    parser.add_argument("--per-form", type=int, default=1000, help="disguised copies per form (0: none)")
    parser.add_argument("--distinct", type=int, default=1000, help="fresh distinct texts per alphabet")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-datasketch", action="store_true")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.table import Table

    console = Console(width=140)
    given = sys.argv[1:] if argv is None else argv
    command = f".venv/bin/python -m bench.dedupe {shlex.join(given)}".rstrip()
    console.print(f"[bold]command:[/] {command}")
    corpus = generate(args.n, args.seed)
    config = ValidateConfig(near_threshold=args.threshold)
    rng = random.Random(args.seed)
    fresh = distinct_texts(np.random.default_rng(args.seed + 3), make_vocabulary(
        np.random.default_rng(args.seed + 4), ALPHABETS["latin"]), args.per_form)
    accented = [disguises.add_diacritics(text, rng) for text in fresh]
    first_texts = corpus.texts + accented  # accented originals: the "diacritics stripped" form copies them
    normalize.keys(["build the code-point table"])  # once per process; timed on its own below
    chunks = -(-args.n // args.chunk)
    runner = beam_runner(args.runner, args.workers, chunks, _warm_up) if args.runner else contextlib.nullcontext(None)
    with tempfile.TemporaryDirectory(prefix="dedupe-bench-") as tmp, runner as beam_options:
        facts = store_texts(first_texts, Path(tmp))
        load, cpu = load_average(), cpu_seconds()
        seconds, decision = run_payable(facts[:args.n], Path(tmp), config, args.workers, args.chunk,
                                        beam_options=beam_options)
        cpu = cpu_seconds() - cpu
        verdicts = decision.verdicts
        forms = (run_disguised(first_texts, corpus, accented, facts, Path(tmp), config, args, beam_options)
                 if args.per_form else {})
    by_id = {v["contribution_id"]: v for v in verdicts}
    assert len(by_id) == args.n, "every contribution got a verdict"
    ours = [by_id[i + 1]["reason"] == reasons.NEAR_DUPLICATE for i in range(args.n)]
    exact_caught = sum(by_id[i + 1]["reason"] == reasons.DUPLICATE for i, k in enumerate(corpus.kind) if k == "exact")
    rows = [("payable", args.n / seconds, seconds, cpu, *precision_recall(ours, corpus),
             f"{args.runner or 'process pool'}, {args.workers} proc; "
             f"exact {exact_caught}/{corpus.kind.count('exact')}")]
    if not args.skip_datasketch:
        cpu = cpu_seconds()
        ds_seconds, flagged = run_datasketch(corpus.texts, args.threshold, args.num_perm)
        rows.append((f"datasketch {_version()}", args.n / ds_seconds, ds_seconds, cpu_seconds() - cpu,
                     *precision_recall(flagged, corpus), f"perm={args.num_perm} lsh={args.threshold}"))

    table = Table(title=f"near-duplicate dedupe, {args.n:,} contributions of ~1 KB "
                        f"({corpus.kind.count('exact'):,} exact, {corpus.kind.count('near'):,} planted near)")
    for column in ("system", "contrib/s", "wall s", "CPU s", "contrib/CPU-s", "precision", "recall", "notes"):
        table.add_column(column, justify="right" if column not in ("system", "notes") else "left")
    for name, rate, secs, cpu, precision, recall, notes in rows:
        table.add_row(name, f"{rate:,.0f}", f"{secs:.2f}", f"{cpu:.2f}", f"{args.n / cpu:,.0f}", f"{precision:.4f}",
                      f"{recall:.4f}", notes)
    console.print(table)
    console.print(f"load average before the payable run: {load}")
    if len(rows) == 2:
        console.print(f"payable / datasketch throughput: [bold]{rows[0][1] / rows[1][1]:.1f}x[/]")
    if forms:
        _print_forms(console, Table, forms)
    costs = normalization_costs(corpus.texts[:args.chunk], args.seed)
    cost_table = Table(title=f"dedupe key cost (normalize.keys, chunks of {args.chunk}); table built once in "
                             f"{costs.pop('table build s'):.2f} s")
    for column in ("texts", "µs per KB, dedupe key", "µs per KB, NFKC + lower (before)"):
        cost_table.add_column(column, justify="right" if column != "texts" else "left")
    for name, (new, old) in costs.items():
        cost_table.add_row(name, f"{new:.1f}", f"{old:.1f}")
    console.print(cost_table)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dedupe.json").write_text(json.dumps({
        "command": command, "normalization": normalize.VERSION, "load_average": load,
        "throughput": [dict(zip(("system", "per_s", "wall_s", "cpu_s", "precision", "recall", "notes"), row,
                                strict=True)) for row in rows],
        "disguised": forms, "key_cost_us_per_kb": {name: {"key": new, "before": old}
                                                   for name, (new, old) in costs.items()},
    }, indent=2))


def run_disguised(first_texts: list[str], corpus: Corpus, accented: list[str], facts: list[dict], root: Path,
                  config: ValidateConfig, args: argparse.Namespace, beam_options: list[str] | None
                  ) -> dict[str, dict]:
    """A first run over the corpus and accented originals, then a second run against its history holding
    ``per_form`` disguised copies per form and fresh distinct texts; outcome per form and per alphabet."""
    _, first = run_payable(facts, root, config, args.workers, args.chunk, beam_options=beam_options)
    history = DedupeState(first.segment)
    accepted = [i for i, kind in enumerate(corpus.kind) if kind == "original"
                and first.verdicts[i]["reason"] is None]
    rng = random.Random(args.seed + 1)
    texts, source, form_of = [], [], []
    for form, disguise in FORMS.items():
        pool = range(args.n, len(first_texts)) if form == "diacritics stripped" else accepted
        for origin in rng.sample(list(pool), min(args.per_form, len(pool))):
            texts.append(disguise(first_texts[origin], rng))
            source.append(origin + 1)
            form_of.append(form)
    np_rng = np.random.default_rng(args.seed + 2)
    for alphabet, letters in ALPHABETS.items():
        fresh = distinct_texts(np_rng, make_vocabulary(np_rng, letters), args.distinct)
        texts += fresh
        source += [None] * len(fresh)
        form_of += [f"distinct {alphabet} texts"] * len(fresh)
    second_facts = store_texts(texts, root, first=len(first_texts))
    _, second = run_payable(second_facts, root, config, args.workers, args.chunk, history, beam_options)
    by_id = {v["contribution_id"]: v for v in second.verdicts}
    results: dict[str, dict] = {}
    for fact, origin, form in zip(second_facts, source, form_of, strict=True):
        verdict = by_id[fact["contribution_id"]]
        entry = results.setdefault(form, {"texts": 0, "hits": 0, "by_reason": {}})
        entry["texts"] += 1
        # a copy counts when rejected as a duplicate of its own original; a distinct text when rejected at all
        entry["hits"] += verdict["reason"] is not None if origin is None else verdict["duplicate_of"] == origin
        reason = verdict["reason"] or "accepted"
        entry["by_reason"][reason] = entry["by_reason"].get(reason, 0) + 1
    for form, entry in results.items():
        entry["measure"] = "false-positive rate" if form.startswith("distinct") else "recall"
        entry["value"] = entry["hits"] / entry["texts"]
    return results


def _print_forms(console, table_type, forms: dict[str, dict]) -> None:
    table = table_type(title="disguised duplicates of earlier runs' texts (second run against the history)")
    for column in ("form", "texts", "measure", "value", "verdicts"):
        table.add_column(column, justify="right" if column in ("texts", "value") else "left")
    for form, entry in forms.items():
        verdicts = ", ".join(f"{reason} {count}" for reason, count in sorted(entry["by_reason"].items()))
        table.add_row(form, f"{entry['texts']:,}", entry["measure"], f"{entry['value']:.4f}", verdicts)
    console.print(table)


def normalization_costs(sample: list[str], seed: int) -> dict:
    """µs per KB of the dedupe key against the normalization it replaced, on one chunk per script."""
    normalize._table.cache_clear()  # time the one-off build of the code-point table too
    start = time.perf_counter()
    normalize.keys(["warm up"])
    costs: dict = {"table build s": time.perf_counter() - start}
    rng = random.Random(seed)
    scripts = {"ASCII (the corpus)": sample,
               "Cyrillic (distinct texts)": distinct_texts(np.random.default_rng(seed), make_vocabulary(
                   np.random.default_rng(seed), ALPHABETS["cyrillic"]), len(sample)),
               "disguised (combined, title case)": [disguises.combined(text, rng) for text in sample]}
    for name, texts in scripts.items():
        kb = sum(len(text.encode()) for text in texts) / 1024
        costs[name] = (_best_of(lambda t=texts: normalize.keys(t)) / kb * 1e6,
                       _best_of(lambda t=texts: [_before(x) for x in t]) / kb * 1e6)
    return costs


_OLD_NON_WORD = re.compile(r"[\W_]+")


def _before(text: str) -> str:
    """The normalization the dedupe key replaced (NFKC + lower case, an ASCII fast path), for comparison."""
    if text.isascii():
        return text.lower()
    return _OLD_NON_WORD.sub(" ", unicodedata.normalize("NFKC", text).lower())


def _best_of(work, repeat: int = 3) -> float:
    """Fastest of ``repeat`` runs: the least disturbed by other jobs on a shared machine."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def _version() -> str:
    from importlib.metadata import version

    return version("datasketch")


if __name__ == "__main__":
    main()
