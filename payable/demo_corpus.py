"""The demo's embedded data: two datanets and contributions from simulated contributors.

Deterministic (seeded), generated rather than downloaded. It plants every case the pipeline must handle:
good on-topic data, an exact duplicate, a near-duplicate (case/punctuation/whitespace changes), a homoglyph
copy (Latin letters swapped for Cyrillic and Greek look-alikes), corrupted text, invalid UTF-8, a JSONL
record missing a required field, and a contribution whose on-chain hash does not match its bytes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from payable.datanets import DatanetSpec
from pipelines.validate import disguises


def eval_queries(seed: int = 99, per_datanet: int = 6) -> dict[str, tuple[str, ...]]:
    """Each datanet owner's evaluation queries: what the model should get better at (held apart from data)."""
    rng = random.Random(seed)
    return {"science": tuple(science_note(rng, sentences=3) for _ in range(per_datanet)),
            "recipes": tuple(recipe(rng) for _ in range(per_datanet))}

_SUBJECTS = ["The electron", "A photon", "The proton", "Every atom", "A neutron star", "The magnetic field",
             "Light", "A chemical bond", "The nucleus", "Entropy", "A catalyst", "The gas"]
_VERBS = ["carries", "absorbs", "releases", "conserves", "transfers", "stores", "bends", "binds"]
_OBJECTS = ["energy in discrete quanta", "momentum during collisions", "charge across the boundary",
            "heat to its surroundings", "angular momentum", "the reaction rate", "electrons in the outer shell",
            "mass into radiation", "information about its state", "pressure at constant volume"]
_CONTEXTS = ["when the temperature rises", "in a vacuum", "under strong fields", "at equilibrium",
             "during the reaction", "at low pressure", "inside the star", "near absolute zero"]
_DISHES = ["lentil soup", "tomato pasta", "fried rice", "banana bread", "vegetable curry", "pancakes",
           "mushroom risotto", "chickpea salad", "apple crumble", "omelette"]
_INGREDIENTS = ["onion", "garlic", "flour", "eggs", "butter", "rice", "tomatoes", "lentils", "milk", "sugar",
                "olive oil", "salt", "pepper", "cumin", "apples", "chickpeas", "mushrooms", "cheese"]


@dataclass(frozen=True)
class DemoContribution:
    """One planned submission: who sends what to which datanet, and what the pipeline should decide."""

    contributor: int  # dev account index
    datanet: str  # "science" or "recipes"
    content: bytes
    planted: str  # what this submission is, for people reading the demo's output
    expect: str  # "accepted" or the rejection reason (pipelines.validate.reasons) the pipeline should record
    wrong_hash: bool = False


def science_note(rng: random.Random, sentences: int = 6) -> str:
    return " ".join(
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_CONTEXTS)}."
        for _ in range(sentences)
    )


def recipe(rng: random.Random) -> str:
    record = {
        "title": rng.choice(_DISHES),
        "ingredients": rng.sample(_INGREDIENTS, 5),
        "steps": [f"Step {i + 1}: combine and cook for {rng.randint(2, 30)} minutes." for i in range(3)],
    }
    return json.dumps(record)


def near_duplicate(text: str) -> str:
    """The same note with case, punctuation and whitespace changed and a few words added."""
    return "  " + text.upper().replace(".", " !").replace(" ", "  ") + " AS EVERYONE KNOWS\n"


def gibberish(rng: random.Random, words: int = 60) -> str:
    """Valid UTF-8 that passes every format check but teaches the model nothing: harmful data."""
    letters = "qxzjvkwy"
    return " ".join("".join(rng.choice(letters) for _ in range(rng.randint(3, 8))) for _ in range(words))


def plan(seed: int = 7, notes_per_contributor: int = 4) -> list[DemoContribution]:
    """The demo's submissions in the order they are sent."""
    rng = random.Random(seed)
    good_authors = [3, 4, 5]
    planned: list[DemoContribution] = []
    for author in good_authors:
        for _ in range(notes_per_contributor):
            planned.append(DemoContribution(author, "science", science_note(rng).encode(), "good", "accepted"))
        lines = "\n".join(recipe(rng) for _ in range(3)) + "\n"
        planned.append(DemoContribution(author, "recipes", lines.encode(), "good", "accepted"))
    original = planned[0].content
    planned += [
        DemoContribution(6, "science", original, "exact duplicate", "duplicate"),
        DemoContribution(6, "science", near_duplicate(original.decode()).encode(), "near-duplicate",
                         "near_duplicate"),
        DemoContribution(7, "science", gibberish(rng).encode(), "corrupted text", "accepted"),
        DemoContribution(7, "science", bytes(rng.getrandbits(8) for _ in range(300)), "invalid UTF-8", "not_utf8"),
        DemoContribution(7, "science", b"zq xv kj !!", "near-empty", "empty"),
        DemoContribution(7, "recipes", json.dumps({"title": "mystery"}).encode() + b"\n", "JSONL missing field",
                         "missing_fields"),
        DemoContribution(8, "science", science_note(rng).encode(), "wrong hash", "hash_mismatch", wrong_hash=True),
        # Last, with its own generator, so that every other submission and figure stays as it was.
        DemoContribution(6, "science", disguises.homoglyphs(planned[1].content.decode(), random.Random(seed)).encode(),
                         "homoglyph copy", "duplicate_normalized"),
    ]
    return planned



SCIENCE = DatanetSpec("science-notes", "text", (), "Short explanatory notes on physics and chemistry",
                      eval_queries()["science"])
RECIPES = DatanetSpec("recipes", "jsonl", ("title", "ingredients", "steps"), "Cooking recipes as JSON records",
                      eval_queries()["recipes"])
