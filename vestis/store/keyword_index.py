"""A BM25 keyword index over the items' text fields (``bm25s``, English stop words, Snowball stems).

An item's document is its metadata's words: every text value (the title, the labels), leaving out
numbers and yes/no flags, which carry no words a person would type. The index is derived data: it
is built for one collection generation, saved under ``cache/keywords-<generation>/`` and rebuilt
(about a second per 10,000 items) when a search finds that the collection has changed since, so
added, changed and removed items are always in step.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vestis.lazy import lazy_import
from vestis.locks import leaf_lock
from vestis.store.atomic import fsync_tree
from vestis.store.collection import Collection

bm25s = lazy_import("bm25s")  # imported on first use (it brings SciPy): an image search never needs it
Stemmer = lazy_import("Stemmer")  # likewise: opening a collection for image search never needs it

log = logging.getLogger(__name__)

PREFIX = "keywords-"
_NOT_WORDS = re.compile(r"^(yes|no|true|false|[\d.,:/ -]+)$", re.IGNORECASE)


def is_word_value(value: str) -> bool:
    """Whether a metadata value is words a person would type (not empty, a number or a yes/no flag)."""
    return bool(value.strip()) and not _NOT_WORDS.match(value)


def item_document(metadata: Mapping[str, Any]) -> str:
    """The words of an item: its text metadata values, without numbers and yes/no flags."""
    values = [" ".join(str(v).split()) for v in metadata.values() if isinstance(v, str)]
    return " ".join(v for v in values if is_word_value(v))


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
                    self._state = (generation, bm25s.BM25.load(str(folder)), np.load(folder / "vids.npy"))
                except (OSError, ValueError, KeyError):
                    self._state = self._build(generation)
            return self._state

    def _build(self, generation: int) -> tuple[int, Any, np.ndarray]:
        items = list(self.collection.iter_items())
        tokens = self._tokenize([item_document(it.metadata) for it in items], True)
        if not tokens.vocab:  # no item has a word (a folder of photos with ids only): nothing to index
            return generation, None, np.zeros(0, np.int64)
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=False)
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
            fsync_tree(tmp)
            os.replace(tmp, self._folder(generation))
        except OSError as e:  # a read-only or full disk: the collection still searches, from memory
            log.warning("keyword index not cached: %s", e)
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        return generation, retriever, vids

    def search(self, text: str, k: int, allowed: np.ndarray | None = None,
               exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The vids of up to ``k`` items matching some word of ``text``, best BM25 score first, and
        their scores (items matching no word are not returned); only vids in ``allowed`` when
        given, never those in ``exclude``."""
        none = np.zeros(0, np.int64), np.zeros(0, np.float32)
        _generation, retriever, vids = self._current()
        if retriever is None or not len(vids) or k < 1:
            return none
        tokens = self._tokenize([text], False)
        if not tokens[0]:
            return none
        mask = None
        if allowed is not None or exclude:
            keep = np.ones(len(vids), bool) if allowed is None else np.isin(vids, allowed)
            keep &= ~np.isin(vids, np.asarray(exclude, np.int64))
            mask = keep.astype(np.float32)
        with self._lock:
            docs, scores = retriever.retrieve(tokens, k=min(k, len(vids)), show_progress=False,
                                              n_threads=1, weight_mask=mask)
        keep = scores[0] > 0
        return vids[docs[0][keep]], scores[0][keep].astype(np.float32)
