"""The duplicate-detection key of a text: what two texts that look the same to a reader have in common.

A paid-for copy must not escape deduplication by changing how the text is encoded rather than what
it says. The key of a character starts from its Unicode TR39 skeleton (canonical decomposition, then
the prototypes of ``confusables.txt`` as bundled by ``confusable-homoglyphs``: Cyrillic а, Greek ο,
mathematical bold letters, ... become the Latin letters they imitate) and repeats these steps until
nothing changes:

1. compatibility decomposition (NFKD): fullwidth, ligature, superscript and other compatibility
   forms become their plain letters, and accented letters split into base letter + combining marks;
2. combining marks (Mn, Me) and format characters (Cf: zero-width spaces and joiners, bidi controls,
   soft hyphen, byte order mark, tags) are dropped, so added, stripped or invisible characters vanish;
3. full case folding, so case changes vanish;
4. TR39 prototypes again (a prototype may be upper case or decompose further);
5. punctuation, symbols, spaces and control characters become spaces (word separators).

The confusables data is case-sensitive (Cyrillic Н imitates H but its lower case н only imitates
small-capital ʜ, and capital I imitates l), so folding first would miss capital look-alikes and
mapping first would make "THIS" and "this" differ. Both cases of a letter therefore share one key:
its lower case's or the one reached through its upper case (н -> Н -> H -> h; i -> I -> l), whichever
is the closer look-alike of plain ASCII (``_key``). Where the two cases imitate two different Latin
letters one of them loses: Greek ν/Ν look like v/N and υ/Υ like u/Y (lower case wins), η/Η like n/H
and β/Β like ß/B (upper case wins), so those swaps are caught only as near-duplicates.

Every step maps one character independently of its neighbours, so the key of a whole chunk is one
gather through a precomputed code-point table (numpy, no Python per character), built once per process
on first use. The key is only ever hashed and shingled for deduplication; stored text never changes.
It collapses some distinct letters of other scripts onto one prototype (Greek η and Latin n, Cyrillic
г and r) and drops the vowel signs of Indic scripts, which only ever makes two texts *more* alike:
genuinely different texts still differ in most of their words (bench/dedupe.py measures it).

``VERSION`` names everything the keys depend on. The dedupe history records it, and history built
under another version is rebuilt from the log instead of being compared with keys made differently.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version

import numpy as np

VERSION = (f"key-2:nfkd,drop-Mn-Me-Cf,casefold,tr39/confusable-homoglyphs-{version('confusable-homoglyphs')}"
           f",non-word-space/unicode-{unicodedata.unidata_version}")
_DROPPED = frozenset({"Mn", "Me", "Cf"})
_SEPARATORS = frozenset({"Zs", "Zl", "Zp", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Cc"})
_LRM = "\u200e"  # the bundled data wraps right-to-left characters in LEFT-TO-RIGHT MARKs for display
_PLANES = (range(0x30000), range(0xE0000, 0xE1000))  # planes 0-2 and 14; 3-13, 15-16: no forms, case or marks
_CODE_POINTS = 0x110000
_MAX_ROUNDS = 8


@dataclass(frozen=True)
class Keys:
    """The keys of a sequence of texts as one UTF-8 buffer; text i is ``data[starts[i]:starts[i + 1] - 1]``."""

    data: bytes  # keys joined by one space each
    starts: np.ndarray  # (n + 1,) int64 byte offsets of each key; the last is len(data) + 1


def dedupe_key(text: str) -> str:
    """The duplicate-detection key of one text (see the module docstring)."""
    return keys([text]).data.decode()


def keys(texts: Sequence[str]) -> Keys:
    """The keys of ``texts``: ASCII texts by two byte-level passes each, the others in one numpy gather."""
    table = _table()
    parts: list[bytes] = [table.ascii_key(text) if text.isascii() else b"" for text in texts]
    others = [i for i, text in enumerate(texts) if not text.isascii()]
    if others:
        gathered = _gather([texts[i] for i in others], table)
        for j, i in enumerate(others):
            parts[i] = gathered.data[gathered.starts[j]:gathered.starts[j + 1] - 1]
    lengths = np.fromiter((len(part) + 1 for part in parts), dtype=np.int64, count=len(parts))
    return Keys(b" ".join(parts), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def _gather(texts: Sequence[str], table: _Table) -> Keys:
    """The keys of ``texts`` through the code-point table, all at once."""
    code_points = np.frombuffer(("\n".join(texts) + "\n").encode("utf-32-le"), dtype=np.uint32)
    lengths = table.length[code_points]
    out = np.repeat(table.single[code_points], lengths)  # right where each key is one character
    multi = np.flatnonzero(lengths > 1)
    if multi.size:
        counts = lengths[multi].astype(np.int64)
        out_start = (np.cumsum(lengths, dtype=np.int64) - lengths)[multi]
        within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        out[np.repeat(out_start, counts) + within] = table.extra[
            np.repeat(table.extra_start[code_points[multi]], counts) + within]
    text_start = np.concatenate([[0], np.cumsum([len(text) + 1 for text in texts])[:-1]]).astype(np.int64)
    key_bytes = np.add.reduceat(table.utf8[code_points].astype(np.int64), text_start)  # + its separator
    data = out.tobytes().decode("utf-32-le").encode()[:-1]
    return Keys(data, np.concatenate([[0], np.cumsum(key_bytes)]).astype(np.int64))


@dataclass(frozen=True)
class _Table:
    """Code point c maps to ``length[c]`` code points: ``single[c]`` if one, else ``extra[extra_start[c]:]``."""

    length: np.ndarray  # (0x110000,) uint8
    utf8: np.ndarray  # (0x110000,) uint8: UTF-8 bytes of the key
    single: np.ndarray  # (0x110000,) uint32
    extra_start: np.ndarray  # (0x110000,) int32
    extra: np.ndarray  # uint32
    ascii_bytes: bytes  # bytes.translate table of the ASCII characters whose key is one character
    ascii_multi: tuple[tuple[str, str], ...]  # ASCII characters whose key is longer (m -> rn)

    def ascii_key(self, text: str) -> bytes:
        """The key of an ASCII text: longer keys spliced in first, then one byte translation (keys are
        closed under the table, so translating a spliced-in key leaves it as it is)."""
        for char, key in self.ascii_multi:
            text = text.replace(char, key)
        return text.encode().translate(self.ascii_bytes)


@functools.cache
def _table() -> _Table:
    keys_of = _char_keys()
    length = np.ones(_CODE_POINTS, dtype=np.uint8)
    utf8 = np.repeat(np.array([1, 2, 3, 4], dtype=np.uint8), [0x80, 0x800 - 0x80, 0x10000 - 0x800,
                                                              _CODE_POINTS - 0x10000])
    single = np.arange(_CODE_POINTS, dtype=np.uint32)
    extra_start = np.zeros(_CODE_POINTS, dtype=np.int32)
    extra: list[int] = []
    for cp, key in keys_of.items():
        length[cp], utf8[cp] = len(key), len(key.encode())
        if len(key) == 1:
            single[cp] = ord(key)
        elif key:
            extra_start[cp] = len(extra)
            extra.extend(map(ord, key))
    ascii_keys = [keys_of.get(cp, chr(cp)) for cp in range(0x80)]
    ascii_bytes = bytes([*(ord(key) if len(key) == 1 else cp for cp, key in enumerate(ascii_keys)), *range(0x80, 256)])
    ascii_multi = tuple((chr(cp), key) for cp, key in enumerate(ascii_keys) if len(key) != 1)
    return _Table(length, utf8, single, extra_start, np.array(extra, dtype=np.uint32), ascii_bytes, ascii_multi)


def _char_keys() -> dict[int, str]:
    """Code point -> key for every character whose key is not itself, closed so that keys are keys."""
    prototypes = prototypes_table()
    changed = {char for plane in _PLANES for char in map(chr, plane) if _may_change(char, prototypes)}
    found = {ord(char): _key(char, prototypes) for char in sorted(changed | set(prototypes))}
    for _ in range(_MAX_ROUNDS):  # a key's own characters may have keys of their own (п -> π -> ...)
        closed = {cp: key.translate(found) for cp, key in found.items()}
        if closed == found:
            return {cp: key for cp, key in found.items() if key != chr(cp)}
        found = closed
    raise RuntimeError("dedupe keys do not converge")


def _key(char: str, prototypes: dict[str, str]) -> str:
    """One key for both cases of a letter: its lower case's or the one reached through its upper case.

    Preferred, in order: a TR39 skeleton that is already plain ASCII (Β -> B rather than β -> ß -> ss,
    Н -> H rather than н -> ʜ), then one that becomes plain ASCII after folding, else the lower case's.
    Between two candidates of one rank the lower case's goes first, unless the letter has no prototype
    of its own (i -> I -> l, as capital I and l look the same).

    Punctuation and symbols stay separators unless their compatibility decomposition holds letters (⒲,
    ⾧) or they imitate one ASCII letter or digit (⍺ -> a; but the em dash, whose prototype is the
    katakana length mark ー, is no word).
    """
    folded = char.casefold()
    skeletons = [_skeleton(folded, prototypes), _skeleton(folded.upper(), prototypes)]
    own = _settle(skeletons[0], prototypes)
    if unicodedata.category(char) in _SEPARATORS and unicodedata.is_normalized("NFKD", char):
        return own if len(own) == 1 and _plain(own) else " "
    if skeletons[0] == folded and unicodedata.is_normalized("NFKD", folded):
        skeletons.reverse()
    ranked = [_settle(s, prototypes) for s in skeletons if _plain(s)] + [_settle(s, prototypes) for s in skeletons]
    return next((key for key in ranked if _plain(key)), own)


def _plain(text: str) -> bool:
    return text.isascii() and text.isalnum()


def _may_change(char: str, prototypes: dict[str, str]) -> bool:
    """A cheap test that the key of ``char`` may not be ``char`` (most code points fail it at once)."""
    category = unicodedata.category(char)
    return (category in _DROPPED or (category in _SEPARATORS and char != " ") or char in prototypes
            or char.casefold() != char or char.upper() != char or not unicodedata.is_normalized("NFKD", char))


def _skeleton(text: str, prototypes: dict[str, str]) -> str:
    """TR39's own order: canonical decomposition (NFD, marks dropped), then prototypes (ϲ -> c before
    NFKD would make it σ)."""
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(prototypes.get(c, c) for c in decomposed if unicodedata.category(c) not in _DROPPED)


def _decompose(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) not in _DROPPED)


def _step(text: str, prototypes: dict[str, str]) -> str:
    """NFKD, drop marks and format characters, fold case, map to prototypes, separators to spaces."""
    mapped = "".join(prototypes.get(c, c) for c in _decompose(text).casefold())
    return "".join(" " if unicodedata.category(c) in _SEPARATORS else c for c in mapped)


def _settle(text: str, prototypes: dict[str, str]) -> str:
    """Steps repeated until nothing changes (a prototype may be upper case or carry a mark)."""
    for _ in range(_MAX_ROUNDS):
        following = _step(text, prototypes)
        if following == text:
            return text
        text = following
    raise RuntimeError(f"dedupe key of {text!r} does not converge")


@functools.cache
def prototypes_table() -> dict[str, str]:
    """Source character -> TR39 prototype, recovered from the library's symmetric confusables table.

    The library stores each ``source -> prototype`` line of confusables.txt in both directions. In that
    file a source is one code point that is never itself a prototype, so a character with exactly one
    partner is a source whose prototype is that partner, unless the partner also has only this one
    partner: then the pair is its own class, and the lower code point stands for it.
    """
    from confusable_homoglyphs import confusables  # here: importing it parses a 900 KB table

    partners = {key.replace(_LRM, ""): [entry["c"].replace(_LRM, "") for entry in entries]
                for key, entries in confusables.confusables_data.items()}
    prototypes = {}
    for char, found in partners.items():
        if len(char) != 1 or len(found) != 1:
            continue
        (partner,) = found
        if len(partner) > 1 or len(partners.get(partner, ())) > 1 or ord(partner) < ord(char):
            prototypes[char] = partner
    return prototypes
