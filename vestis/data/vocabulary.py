"""A shop vocabulary: the words shoppers type, mapped to the words a catalogue labels with.

The file format is Solr's and Elasticsearch's synonyms format, one entry a line:

- ``tshirts, tee, t shirt``: two-way, one meaning; the first is the catalogue's word, which the
  others find (and which the vector side is given in their place);
- ``kicks => sneakers``: one-way, the left words also find the right ones (and what those are
  two-way with), never back;
- ``#`` starts a comment (at the start of a line, or after a space: an entry's source note).

vestis ships :data:`SHIPPED` (``fashion_synonyms.txt``, each entry with its source); a catalogue
adds or overrides entries with its own file, where a word on the left of one of its entries drops
the shipped entries of that word. Words are matched in lower case, split at anything that is not a
letter or digit ("T-Shirt" is "t shirt"), a plural "s" or "es" aside; the longest phrase wins.

A bad file is refused whole, with the line at fault (:class:`VocabularyError`): bytes that are not
UTF-8, an empty word, a line over :data:`MAX_LINE` characters or :data:`MAX_WORDS` words, more than
:data:`MAX_ENTRIES` entries, or one-way entries that lead back to where they started (a cycle).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from vestis.errors import VestisError

MAX_BYTES = 2_000_000  # a synonyms file larger than this is refused before it is read
MAX_LINE = 2_000  # characters of one line
MAX_WORDS = 64  # words or phrases of one entry
MAX_ENTRIES = 20_000
MAX_PHRASE = 4  # words of the longest phrase matched
_TOKEN = re.compile(r"[a-z0-9]+")
_COMMENT = re.compile(r"(^|\s)#.*$")


class VocabularyError(VestisError, ValueError):
    """A synonyms file that cannot be used (the message names the file and the line)."""


def singular(word: str) -> str:
    """A label's singular as titles write it ("Watches" -> "Watch", "Tshirts" -> "Tshirt")."""
    if word.endswith(("ches", "shes", "xes", "sses")):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def tokens(text: str) -> list[str]:
    """The words of ``text`` as the vocabulary matches them (lower case, letters and digits)."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True)
class Entry:
    """One line: ``words`` (two-way when ``targets`` is empty) or ``words => targets``."""

    words: tuple[str, ...]
    targets: tuple[str, ...] = ()
    where: str = ""  # file:line, for messages

    @property
    def two_way(self) -> bool:
        return not self.targets


def _phrase(word: str, where: str) -> str:
    phrase = " ".join(tokens(word))
    if not phrase:
        raise VocabularyError(f"{where}: an empty word (two commas in a row, or a word of no letters or digits)")
    if len(phrase.split()) > MAX_PHRASE:
        raise VocabularyError(f"{where}: {word.strip()[:60]!r} has more than {MAX_PHRASE} words")
    return phrase


def _words(side: str, where: str) -> tuple[str, ...]:
    parts = side.split(",")
    if len(parts) > MAX_WORDS:
        raise VocabularyError(f"{where}: more than {MAX_WORDS} words in one entry ({len(parts)})")
    return tuple(dict.fromkeys(_phrase(p, where) for p in parts))


def parse(data: bytes, name: str) -> list[Entry]:
    """The entries of a synonyms file's bytes (see the module docstring for what is refused)."""
    if len(data) > MAX_BYTES:
        raise VocabularyError(f"{name}: larger than {MAX_BYTES:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise VocabularyError(f"{name}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})") from e
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}"
        if len(line) > MAX_LINE:
            raise VocabularyError(f"{where}: a line of {len(line):,} characters (at most {MAX_LINE:,})")
        line = _COMMENT.sub("", line).strip()
        if not line:
            continue
        left, arrow, right = line.partition("=>")
        if "=>" in right:
            raise VocabularyError(f"{where}: more than one '=>'")
        entries.append(Entry(_words(left, where), _words(right, where) if arrow else (), where))
        if len(entries) > MAX_ENTRIES:
            raise VocabularyError(f"{name}: more than {MAX_ENTRIES:,} entries")
    return entries


def read_synonyms(path: Path) -> bytes:
    """A synonyms file's bytes (a missing, unreadable or too large file is a clear error)."""
    try:
        if path.stat().st_size > MAX_BYTES:
            raise VocabularyError(f"{path}: larger than {MAX_BYTES:,} bytes")
        return path.read_bytes()
    except OSError as e:
        raise VocabularyError(f"cannot read the synonyms file {path}: {e.strerror or e}") from e


def read_entries(path: Path) -> list[Entry]:
    """The entries of a synonyms file."""
    return parse(read_synonyms(path), path.name)


def shipped_entries() -> list[Entry]:
    """The entries of the vocabulary that ships with vestis."""
    return parse(resources.files("vestis.data").joinpath(SHIPPED).read_bytes(), SHIPPED)


SHIPPED = "fashion_synonyms.txt"


def _check_cycles(entries: Sequence[Entry]) -> None:
    """Refuse one-way entries that lead back to a word they left (through two-way entries too)."""
    parent: dict[str, str] = {}

    def root(word: str) -> str:
        parent.setdefault(word, word)
        while parent[word] != word:
            parent[word] = parent[parent[word]]
            word = parent[word]
        return word

    for entry in entries:
        if entry.two_way:
            for word in entry.words[1:]:
                parent[root(word)] = root(entry.words[0])
    edges: dict[str, dict[str, str]] = {}
    for entry in entries:
        for word in entry.words if not entry.two_way else ():
            for target in entry.targets:
                edges.setdefault(root(word), {}).setdefault(root(target), f"{word} => {target} ({entry.where})")
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt, rule in edges.get(node, {}).items():
            if state.get(nxt) == 1:
                raise VocabularyError("synonyms lead back to where they started (a cycle): "
                                      + "; ".join([*path, rule][-8:]))
            if nxt not in state:
                walk(nxt, [*path, rule])
        state[node] = 2

    for node in list(edges):
        if node not in state:
            walk(node, [])


@dataclass(frozen=True)
class Rewrite:
    """What the vocabulary (and the spelling) made of a query: ``spelled`` (typed, corrected),
    ``expanded`` (phrase of the query, the words it also finds), ``text`` (the query with its
    spelling corrected), ``canonical`` (each matched phrase replaced by the catalogue's word: what
    the vector side embeds) and ``keyword`` (the text and every word it also finds: BM25's query)."""

    original: str
    text: str
    canonical: str
    keyword: str
    spelled: tuple[tuple[str, str], ...] = ()
    expanded: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.spelled or self.expanded)

    def as_dict(self) -> dict[str, object]:
        return {"spelling": {typed: fixed for typed, fixed in self.spelled},
                "synonyms": {phrase: list(words) for phrase, words in self.expanded},
                "vector text": self.canonical}

    def describe(self) -> str:
        """One line for people: ``sneekers -> sneakers (spelling); kicks -> casual shoes, sports shoes``."""
        parts = [f"{typed} -> {fixed} (spelling)" for typed, fixed in self.spelled]
        parts += [f"{phrase} -> {', '.join(words[:4])}{', ...' if len(words) > 4 else ''}"
                  for phrase, words in self.expanded]
        return "; ".join(parts)


@dataclass
class Vocabulary:
    """Synonyms ready to match (see the module docstring); build with :meth:`from_entries`."""

    expansions: dict[str, tuple[str, ...]] = field(default_factory=dict)  # phrase -> the words it also finds
    known: frozenset[str] = frozenset()  # every phrase of the entries (a known one is matched whole)
    digest: str = ""  # identifies the entries (a cache made with other synonyms is not reused)

    @classmethod
    def from_entries(cls, entries: Sequence[Entry], overrides: Sequence[Entry] = (),
                     learned: Sequence[Entry] = ()) -> Vocabulary:
        """The shipped ``entries`` with a catalogue's ``overrides`` (a word on the left of an
        override drops the shipped entries it is on the left of) and ``learned`` entries for words
        neither knows (mined from the catalogue); refuses cycles.

        A word finds the first word of each two-way entry it is in (the catalogue's word; the first
        word itself needs nothing more) and, for each one-way entry it is on the left of, the right
        words and the first words of their two-way entries."""
        replaced = {w for e in overrides for w in e.words}
        merged = [*(e for e in entries if not replaced & set(e.words)), *overrides]
        written = {w for e in merged for w in (*e.words, *e.targets)}
        merged += [e for e in learned if not written & set(e.words)]
        _check_cycles(merged)
        heads: dict[str, list[str]] = {}  # word -> the first words of its two-way entries
        for entry in merged:
            for word in entry.words if entry.two_way else ():
                heads.setdefault(word, []).append(entry.words[0])
        found: dict[str, list[str]] = {w: list(h) for w, h in heads.items()}
        for entry in merged:
            for word in entry.words if not entry.two_way else ():
                found.setdefault(word, []).extend(t for target in entry.targets
                                                  for t in (target, *heads.get(target, ())))
        expansions = {w: others for w, words in found.items()  # a plural of the word is no other word
                      if (others := tuple(x for x in dict.fromkeys(words) if singular(x) != singular(w)))}
        digest = hashlib.sha256(repr([(e.words, e.targets) for e in merged]).encode()).hexdigest()[:16]
        known = frozenset(w for e in merged for w in (*e.words, *e.targets))
        return cls(expansions, known, digest)

    def words(self) -> set[str]:
        """Every single word the vocabulary knows (for spelling correction)."""
        return {w for phrase in self.known for w in phrase.split()}

    def _lookup(self, phrase: str) -> str | None:
        for form in (phrase, singular(phrase), phrase + "s", phrase + "es"):
            if form in self.known:
                return form
        return None

    def rewrite(self, text: str, spelled: Sequence[tuple[str, str]] = ()) -> Rewrite:
        """``text`` with its phrases matched (longest first, left to right); ``spelled`` are the
        corrections already made to its words (typed, corrected)."""
        fixes = dict(spelled)
        words = [fixes.get(w, w) for w in tokens(text)]
        corrected = " ".join(words) if fixes else text
        canonical, keyword, expanded = [], [], []
        i = 0
        while i < len(words):
            for n in range(min(MAX_PHRASE, len(words) - i), 0, -1):
                phrase = " ".join(words[i:i + n])
                form = self._lookup(phrase)
                if form is not None:
                    break
            else:
                canonical.append(words[i])
                i += 1
                continue
            others = self.expansions.get(form, ())
            canonical.append(others[0] if others else phrase)
            if others:
                expanded.append((phrase, others))
                keyword += others
            i += n
        if not expanded:
            return Rewrite(text, corrected, corrected, corrected, tuple(spelled))
        extra = [w for w in dict.fromkeys(" ".join(keyword).split()) if w not in set(words)]
        return Rewrite(text, corrected, " ".join(canonical), " ".join([*words, *extra]), tuple(spelled),
                       tuple(expanded))
