"""How a copied text can be disguised while it still reads the same: the threat the dedupe key answers.

Each function turns a text into one a reader cannot tell from it, but whose bytes differ everywhere, the
way a contributor who wants to be paid twice for one text would. They are deterministic given ``rng``,
so the demo, the tests and ``bench/dedupe.py`` plant the same kinds of copies. The look-alike letters
come from the TR39 confusables data (``normalize``), restricted to real letters of the Cyrillic and
Greek alphabets, which is what a copy-paste attacker uses; the tests also use hand-typed copies.
"""

from __future__ import annotations

import functools
import random
import unicodedata

from pipelines.validate import normalize

ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad")  # spaces, joiners, BOM, soft hyphen
BIDI = (("\u202e", "\u202c"), ("\u2067", "\u2069"), ("\u200f", "\u200e"))  # override, isolate, marks
COMBINING = ("\u0301", "\u0300", "\u0308", "\u0302", "\u0303", "\u0327")  # acute, grave, diaeresis, ...


def homoglyphs(text: str, rng: random.Random, share: float = 1.0) -> str:
    """Latin letters swapped for Cyrillic or Greek letters that look the same (``share`` of those that can)."""
    table = _look_alikes()
    return "".join(rng.choice(table[c]) if c in table and rng.random() < share else c for c in text)


def invisible(text: str, rng: random.Random, per_word: float = 0.5) -> str:
    """Zero-width characters inside words and bidi controls around them: invisible when rendered."""
    words = []
    for word in text.split(" "):
        if len(word) > 1 and rng.random() < per_word:
            cut = rng.randrange(1, len(word))
            word = word[:cut] + rng.choice(ZERO_WIDTH) + word[cut:]
        if rng.random() < per_word / 2:
            start, end = rng.choice(BIDI)
            word = start + word + end
        words.append(word)
    return " ".join(words)


def compatibility(text: str, rng: random.Random, per_word: float = 0.5) -> str:
    """Words in fullwidth or mathematical letters, and fi/fl ligatures: NFKC folds them back."""
    styles = (_fullwidth, _bold, _ligatures)
    return " ".join(rng.choice(styles)(word) if rng.random() < per_word else word for word in text.split(" "))


def add_diacritics(text: str, rng: random.Random, per_letter: float = 0.3) -> str:
    """Combining accents on letters (composed where Unicode has a precomposed letter, else left combining)."""
    marked = "".join(c + rng.choice(COMBINING) if c.isalpha() and rng.random() < per_letter else c for c in text)
    return unicodedata.normalize("NFC", marked)


def strip_diacritics(text: str) -> str:
    """Every accent removed: what a copy of an accented text looks like after an ASCII round trip."""
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def combined(text: str, rng: random.Random, title: bool = True) -> str:
    """Every disguise at once (half the look-alike letters swapped), in title case unless ``title`` is False."""
    return invisible(compatibility(add_diacritics(homoglyphs(text.title() if title else text, rng, 0.5), rng),
                                   rng), rng)


def _fullwidth(word: str) -> str:
    return "".join(chr(ord(c) - 0x21 + 0xFF01) if "!" <= c <= "~" else c for c in word)


def _bold(word: str) -> str:
    """MATHEMATICAL BOLD letters (U+1D400 capitals, U+1D41A small)."""
    return "".join(chr(0x1D400 + ord(c) - ord("A")) if "A" <= c <= "Z" else
                   chr(0x1D41A + ord(c) - ord("a")) if "a" <= c <= "z" else c for c in word)


def _ligatures(word: str) -> str:
    return word.replace("ffi", "\ufb03").replace("fi", "\ufb01").replace("fl", "\ufb02").replace("ff", "\ufb00")


@functools.cache
def _look_alikes() -> dict[str, tuple[str, ...]]:
    """Latin letter -> the Cyrillic and Greek letters whose TR39 prototype it is (case kept: Н for H)."""
    found: dict[str, list[str]] = {}
    for char, prototype in normalize.prototypes_table().items():
        script = unicodedata.name(char, "").split(" ")[0]
        if script in ("CYRILLIC", "GREEK") and char.isalpha() and prototype.isascii() and prototype.isalpha():
            found.setdefault(prototype, []).append(char)
    return {letter: tuple(sorted(chars)) for letter, chars in sorted(found.items())}
