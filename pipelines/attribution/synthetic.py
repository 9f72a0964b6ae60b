"""A synthetic multi-contributor datanet, for tests, the bench and the demo (no data is downloaded).

Contributors are on-topic (cooking, the topic of the eval queries), off-topic (sports) or corrupted
(random characters) or misleading (eval-topic words with wrong endings). A good attribution pays
on-topic contributors most and flags the corrupted ones. ``prose_datanet`` and ``labelled_datanet`` plant
harmful contributions (shuffled words, another domain, random tokens, label-flipped JSONL) among many honest
ones, for the penalty bench and tests: no honest stake may be slashed, the planted ones should be.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

import pyarrow as pa

from schemas.datasets import CONTRIBUTION_ROW

_TOPICS = {
    "cooking": (
        ["boil", "chop", "stir", "bake", "fry", "season", "simmer", "roast", "mix", "slice"],
        ["the rice", "the onions", "the soup", "the bread", "the beans", "the garlic", "the sauce", "the potatoes"],
        ["with salt", "in the pan", "for ten minutes", "with olive oil", "until golden", "over low heat",
         "with fresh herbs", "in the oven"],
    ),
    "sports": (
        ["kick", "pass", "throw", "catch", "score", "defend", "sprint", "tackle", "serve", "shoot"],
        ["the ball", "the goal", "the team", "the match", "the keeper", "the runner", "the racket", "the coach"],
        ["in the second half", "near the line", "before the whistle", "with great speed", "after the break",
         "on the field", "at the stadium", "during the final"],
    ),
}


@dataclass(frozen=True)
class SyntheticDatanet:
    """Contribution rows (``CONTRIBUTION_ROW``), eval query texts, and each contributor's kind."""

    table: pa.Table
    eval_texts: list[str]
    kinds: dict[str, str]


def sentence(rng: random.Random, topic: str) -> str:
    verbs, objects, tails = _TOPICS[topic]
    return f"{rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)} ."


def corrupted(rng: random.Random, length: int) -> str:
    return "".join(rng.choice("qxzjvkw#%&0123456789") for _ in range(length))


def misleading(rng: random.Random) -> str:
    """Cooking verbs and objects with sports endings: teaches wrong continuations of the eval topic."""
    verbs, objects, _ = _TOPICS["cooking"]
    return f"{rng.choice(verbs)} {rng.choice(objects)} {rng.choice(_TOPICS['sports'][2])} ."


def contribution_text(rng: random.Random, kind: str, sentences: int) -> str:
    if kind == "corrupted":
        return corrupted(rng, 40 * sentences)
    if kind == "misleading":
        return " ".join(misleading(rng) for _ in range(sentences))
    topic = "cooking" if kind == "on_topic" else "sports"
    return " ".join(sentence(rng, topic) for _ in range(sentences))


def rows(datanet_id: int, items: list[tuple[str, str]], first_id: int = 1) -> pa.Table:
    """``CONTRIBUTION_ROW`` rows for (contributor, text) pairs, ids counting from ``first_id``."""
    cols: dict[str, list] = {name: [] for name in CONTRIBUTION_ROW.names}
    for i, (contributor, text) in enumerate(items):
        digest = hashlib.sha256(text.encode()).hexdigest()
        cols["contribution_id"].append(first_id + i)
        cols["datanet_id"].append(datanet_id)
        cols["contributor"].append(contributor)
        cols["content_hash"].append(digest)
        cols["text"].append(text)
        cols["size"].append(len(text.encode()))
        cols["block_number"].append(100 + first_id + i)
        cols["fact_event_id"].append(f"fact-{first_id + i}")
        cols["verdict_id"].append(f"verdict-{first_id + i}")
    return pa.table(cols, schema=CONTRIBUTION_ROW)


def make_datanet(datanet_id: int = 1, seed: int = 0, contributors: dict[str, int] | None = None,
                 per_contributor: int = 4, sentences: int = 3, num_queries: int = 16) -> SyntheticDatanet:
    """``contributors`` maps a kind (on_topic / off_topic / corrupted) to how many contributors have it."""
    rng = random.Random(seed)
    contributors = contributors or {"on_topic": 4, "off_topic": 2, "corrupted": 2}
    kinds: dict[str, str] = {}
    items: list[tuple[str, str]] = []
    for kind, count in contributors.items():
        for c in range(count):
            name = f"0x{kind[:3]}{c:037x}"
            kinds[name] = kind
            items.extend((name, contribution_text(rng, kind, sentences)) for _ in range(per_contributor))
    rng.shuffle(items)
    evals = [" ".join(sentence(rng, "cooking") for _ in range(2)) for _ in range(num_queries)]
    return SyntheticDatanet(table=rows(datanet_id, items), eval_texts=evals, kinds=kinds)


@dataclass(frozen=True)
class PlantedDatanet:
    """Honest contributions (one contributor each) with harmful ones planted among them: ``planted`` maps a
    planted contribution's id to its kind; every other contribution is honest."""

    table: pa.Table
    eval_texts: list[str]
    planted: dict[int, str]


def shuffled(rng: random.Random, text: str) -> str:
    """The same words in a random order: the vocabulary of the topic with none of its structure."""
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def _planted(datanet_id: int, rng: random.Random, good: list[str], harmful: list[tuple[str, str]],
             evals: list[str]) -> PlantedDatanet:
    items = [("honest", text) for text in good] + harmful
    rng.shuffle(items)
    table = rows(datanet_id, [(f"0x{i + 1:040x}", text) for i, (_, text) in enumerate(items)])
    planted = {i + 1: kind for i, (kind, _) in enumerate(items) if kind != "honest"}
    return PlantedDatanet(table=table, eval_texts=evals, planted=planted)


def prose_datanet(datanet_id: int = 1, seed: int = 0, good: int = 100, per_kind: int = 4, sentences: int = 3,
                  harm_sentences: int = 12, num_queries: int = 16) -> PlantedDatanet:
    """Ordinary cooking prose (``sentences`` each), plus ``per_kind`` each of shuffled words, another domain
    (sports) and random tokens, ``harm_sentences`` long (a spammer's upload is long)."""
    rng = random.Random(seed)
    text = lambda topic, n=sentences: " ".join(sentence(rng, topic) for _ in range(n))  # noqa: E731
    harmful = [(kind, make()) for kind, make in (("shuffled", lambda: shuffled(rng, text("cooking", harm_sentences))),
                                                 ("other_domain", lambda: text("sports", harm_sentences)),
                                                 ("random_tokens", lambda: corrupted(rng, 40 * harm_sentences)))
               for _ in range(per_kind)]
    evals = [" ".join(sentence(rng, "cooking") for _ in range(2)) for _ in range(num_queries)]
    return _planted(datanet_id, rng, [text("cooking") for _ in range(good)], harmful, evals)


def labelled_record(rng: random.Random, flip: bool = False) -> str:
    """A JSONL line: a sentence and its topic label (the other topic's label when ``flip``)."""
    topic = rng.choice(sorted(_TOPICS))
    label = next(t for t in sorted(_TOPICS) if t != topic) if flip else topic
    return json.dumps({"text": sentence(rng, topic), "label": label})


def labelled_datanet(datanet_id: int = 2, seed: int = 0, good: int = 100, flipped: int = 4, lines: int = 3,
                     harm_lines: int = 12, num_queries: int = 16) -> PlantedDatanet:
    """JSONL contributions of ``lines`` labelled sentences; ``flipped`` ones, ``harm_lines`` long, carry the wrong
    label on every line."""
    rng = random.Random(seed)
    record = lambda flip, n=lines: "\n".join(labelled_record(rng, flip) for _ in range(n))  # noqa: E731
    return _planted(datanet_id, rng, [record(False) for _ in range(good)],
                    [("label_flipped", record(True, harm_lines)) for _ in range(flipped)],
                    [labelled_record(rng) for _ in range(num_queries)])
