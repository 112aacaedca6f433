"""A BM25 keyword index over the items' text fields (``bm25s``, English stop words, Snowball stems),
and the rewriting of a query's words before any search sees them.

An item's document is its metadata's words: every text value (the title, the labels), leaving out
numbers and yes/no flags, which carry no words a person would type. The index is derived data: it
is built for one collection generation, saved under ``cache/keywords-<generation>/`` and rebuilt
(about a second per 10,000 items) when a search finds that the collection has changed since, so
added, changed and removed items are always in step.

**Rewriting** (:meth:`KeywordIndex.rewrite`): a word neither the catalogue nor the vocabulary knows
is read as the nearest one that is (:mod:`vestis.data.spelling`), then the shop vocabulary
(:mod:`vestis.data.vocabulary`: the shipped one, with the collection's own ``synonyms.txt`` when it
has one, see :func:`save_synonyms`, and the words mined from its titles, :mod:`vestis.store.mined`)
adds the catalogue's words for the shop words. BM25 is given the
words with what they find; the vector side the words replaced by the catalogue's.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import shutil
import tempfile
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vestis.data.spelling import Speller
from vestis.data.vocabulary import Entry, Rewrite, Vocabulary, parse, read_entries, shipped_entries, tokens
from vestis.lazy import lazy_import
from vestis.locks import leaf_lock
from vestis.store.atomic import atomic_write_bytes, fsync_tree
from vestis.store.collection import Collection
from vestis.store.mined import DEFAULT_PRECISION, LISTED, MAX_VALUES, Mined, label_columns, mine, mined_entries

bm25s = lazy_import("bm25s")  # imported on first use (it brings SciPy): an image search never needs it
Stemmer = lazy_import("Stemmer")  # likewise: opening a collection for image search never needs it

log = logging.getLogger(__name__)

PREFIX = "keywords-"
SYNONYMS = "synonyms.txt"  # a collection's own synonyms, beside its database
REWRITES = 4_096  # rewritten queries kept (a hybrid search rewrites its words for each side)
_NOT_WORDS = re.compile(r"^(yes|no|true|false|[\d.,:/ -]+)$", re.IGNORECASE)


@functools.cache
def stop_words() -> frozenset[str]:
    """bm25s's English stop words, which the index drops (imported on first use: bm25s brings SciPy)."""
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def is_word_value(value: str) -> bool:
    """Whether a metadata value is words a person would type (not empty, a number or a yes/no flag)."""
    return bool(value.strip()) and not _NOT_WORDS.match(value)


def item_document(metadata: Mapping[str, Any]) -> str:
    """The words of an item: its text metadata values, without numbers and yes/no flags."""
    values = [" ".join(str(v).split()) for v in metadata.values() if isinstance(v, str)]
    return " ".join(v for v in values if is_word_value(v))


def save_synonyms(collection: Collection, data: bytes, name: str) -> dict[str, int]:
    """Store a synonyms file's ``data`` (``name`` for messages) with ``collection``, replacing any it
    had, after checking it whole with the shipped vocabulary: a bad file is refused and the
    collection left as it was."""
    entries = parse(data, name)
    Vocabulary.from_entries(shipped_entries(), entries)
    atomic_write_bytes(collection.path / SYNONYMS, data)
    return {"entries": len(entries)}


def own_synonyms(collection: Collection) -> str:
    """The collection's own synonyms file, as stored ("" when it has none)."""
    own = collection.path / SYNONYMS
    return own.read_text(encoding="utf-8") if own.exists() else ""


def collection_vocabulary(collection: Collection, learned: Sequence[Entry] = ()) -> Vocabulary:
    """The shipped vocabulary with the collection's own synonyms when it has them, and ``learned``
    entries (mined from the catalogue) for the words neither knows."""
    own = collection.path / SYNONYMS
    return Vocabulary.from_entries(shipped_entries(), read_entries(own) if own.exists() else (), learned)


def vocabulary_info(collection: Collection) -> dict[str, Any]:
    """What the collection's word search rewrites with, for ``vestis text info``: the entries of the
    shipped vocabulary and of the collection's own synonyms, and the words mined from its titles
    (word, label column, value, items with the word, precision), best first."""
    own = collection.path / SYNONYMS
    index = KeywordIndex(collection)
    used = index.mined_precision
    mined = [m.as_list() for m in index.mined() if m.precision >= (LISTED if used is None else used)]
    return {"vocabulary (shipped entries)": len(shipped_entries()),
            "vocabulary (the collection's own entries)": len(read_entries(own)) if own.exists() else 0,
            "mined words used": "none (chosen on validation)" if used is None else f"precision >= {used}",
            "mined from the titles (word, column, value, items, precision)": mined}


class KeywordIndex:
    """BM25 over a collection's items (see the module docstring). Thread-safe, in the lock order of
    :mod:`vestis.locks`: the collection is read (and the index rebuilt) under the collection's lock,
    and the retriever is queried under this index's own leaf lock, which calls nothing else."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self._stemmer = Stemmer.Stemmer("english")
        self._lock = leaf_lock(f"keyword index {collection.path}")
        # (generation, retriever or None when no item has a word, vids): replaced whole, never changed
        self._state: tuple[int, Any, np.ndarray] = (-1, None, np.zeros(0, np.int64))
        self._words: Counter[str] = Counter()  # the catalogue's words (of the generation in _state)
        self._mined: list[Mined] = []  # words naming a label value (of the generation in _state)
        self.mined_precision = DEFAULT_PRECISION  # the least precision of a mined word used (None: none)
        # (synonyms file stamp, generation, mined precision, vocabulary, speller): replaced whole when one moved
        self._rewriter: tuple[Any, int, float, Vocabulary, Speller] | None = None
        self._rewrites: OrderedDict[str, Rewrite] = OrderedDict()
        self.rewriting = True  # False: the words are searched as typed (to measure what rewriting adds)

    def _tokenize(self, texts: list[str], ids: bool) -> Any:
        return bm25s.tokenize(texts, stopwords="en", stemmer=self._stemmer, return_ids=ids, show_progress=False)

    def _folder(self, generation: int) -> Path:
        return self.collection.path / "cache" / f"{PREFIX}{generation}"

    def _current(self) -> tuple[int, Any, np.ndarray]:
        """The index of the collection's current generation (loaded from its cache, or built)."""
        with self.collection.lock:  # the items read below belong to the generation read here
            generation = self.collection.generation
            if self._state[0] != generation:
                folder = self._folder(generation)
                try:
                    state = (generation, bm25s.BM25.load(str(folder)), np.load(folder / "vids.npy"))
                    self._words = Counter(json.loads((folder / "words.json").read_text()))
                    self._mined = [Mined(*m) for m in json.loads((folder / "mined.json").read_text())]
                    self._state = state
                except (OSError, ValueError, KeyError):
                    self._state = self._build(generation)
            return self._state

    def _build(self, generation: int) -> tuple[int, Any, np.ndarray]:
        items = list(self.collection.iter_items())
        documents = [item_document(it.metadata) for it in items]
        self._words = Counter(w for doc in documents for w in set(tokens(doc)))
        columns = label_columns(self.collection.metadata_columns(max_values=MAX_VALUES + 1), len(items),
                                is_word_value)
        self._mined = mine((it.metadata for it in items), columns, stop_words())
        indexed = self._tokenize(documents, True)
        if not indexed.vocab:  # no item has a word (a folder of photos with ids only): nothing to index
            return generation, None, np.zeros(0, np.int64)
        retriever = bm25s.BM25()
        retriever.index(indexed, show_progress=False)
        vids = np.array([it.vid for it in items], np.int64)
        cache = self.collection.path / "cache"
        tmp: Path | None = None
        try:
            for old in cache.glob(f"{PREFIX}*"):
                shutil.rmtree(old, ignore_errors=True)
            cache.mkdir(exist_ok=True)  # written aside and renamed into place: a reader never sees half an index
            tmp = Path(tempfile.mkdtemp(prefix=f".{PREFIX}", dir=cache))
            retriever.save(str(tmp))
            np.save(tmp / "vids.npy", vids)
            (tmp / "words.json").write_text(json.dumps(self._words))
            (tmp / "mined.json").write_text(json.dumps([m.as_list() for m in self._mined]))
            fsync_tree(tmp)
            os.replace(tmp, self._folder(generation))
        except OSError as e:  # a read-only or full disk: the collection still searches, from memory
            log.warning("keyword index not cached: %s", e)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        return generation, retriever, vids

    def rewrite(self, text: str) -> Rewrite:
        """``text`` with its spelling corrected and its shop words expanded (see the module
        docstring); the collection's synonyms are read again when their file changed."""
        if not self.rewriting:
            return Rewrite(text, text, text, text)
        generation = self._current()[0]
        own = self.collection.path / SYNONYMS
        try:
            stamp: Any = (own.stat().st_mtime_ns, own.stat().st_size)
        except OSError:
            stamp = None
        key = (stamp, generation, self.mined_precision)
        with self._lock:
            rewriter = self._rewriter
            if rewriter is not None and rewriter[:3] == key:
                done = self._rewrites.get(text)
                if done is not None:
                    self._rewrites.move_to_end(text)
                    return done
        if rewriter is None or rewriter[:3] != key:
            vocabulary = collection_vocabulary(self.collection, mined_entries(self._mined, self.mined_precision))
            rewriter = (*key, vocabulary, Speller(self._words, vocabulary.words()))
        vocabulary, speller = rewriter[3:]
        stop = stop_words()
        spelled = [(w, fixed) for w in dict.fromkeys(tokens(text))
                   if w not in stop and (fixed := speller.correct(w)) is not None]
        done = vocabulary.rewrite(text, spelled)
        with self._lock:
            if self._rewriter is not rewriter:
                self._rewriter, self._rewrites = rewriter, OrderedDict()
            self._rewrites[text] = done
            while len(self._rewrites) > REWRITES:
                self._rewrites.popitem(last=False)
        return done

    def mined(self) -> list[Mined]:
        """The words of the titles that name a label value (see :mod:`vestis.store.mined`), best first."""
        self._current()
        return list(self._mined)

    def search(self, text: str, k: int, allowed: np.ndarray | None = None,
               exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The vids of up to ``k`` items matching some word of ``text``, best BM25 score first, and
        their scores (items matching no word are not returned); only vids in ``allowed`` when
        given, never those in ``exclude``."""
        none = np.zeros(0, np.int64), np.zeros(0, np.float32)
        _generation, retriever, vids = self._current()
        if retriever is None or not len(vids) or k < 1:
            return none
        query = [list(dict.fromkeys(self._tokenize([self.rewrite(text).keyword], False)[0]))]  # a stem counts once
        if not query[0]:
            return none
        mask = None
        if allowed is not None or exclude:
            keep = np.ones(len(vids), bool) if allowed is None else np.isin(vids, allowed)
            keep &= ~np.isin(vids, np.asarray(exclude, np.int64))
            mask = keep.astype(np.float32)
        with self._lock:
            docs, scores = retriever.retrieve(query, k=min(k, len(vids)), show_progress=False,
                                              n_threads=1, weight_mask=mask)
        keep = scores[0] > 0
        return vids[docs[0][keep]], scores[0][keep].astype(np.float32)
