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
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vestis.lazy import lazy_import
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
    """BM25 over a collection's items (see the module docstring). Thread-safe."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self._stemmer = Stemmer.Stemmer("english")
        self._lock = threading.Lock()
        self._generation = -1
        self._retriever: bm25s.BM25 | None = None
        self._vids = np.zeros(0, np.int64)

    def _tokenize(self, texts: list[str], ids: bool) -> Any:
        return bm25s.tokenize(texts, stopwords="en", stemmer=self._stemmer, return_ids=ids, show_progress=False)

    def _folder(self, generation: int) -> Path:
        return self.collection.path / "cache" / f"{PREFIX}{generation}"

    def _sync(self) -> None:
        generation = self.collection.generation
        if generation == self._generation:
            return
        folder = self._folder(generation)
        try:
            self._retriever = bm25s.BM25.load(str(folder))
            self._vids = np.load(folder / "vids.npy")
        except (OSError, ValueError, KeyError):
            self._build(generation)
        self._generation = generation

    def _build(self, generation: int) -> None:
        items = list(self.collection.iter_items())
        documents = [item_document(it.metadata) for it in items]
        retriever = bm25s.BM25()
        if items:
            retriever.index(self._tokenize(documents, True), show_progress=False)
        self._retriever, self._vids = retriever, np.array([it.vid for it in items], np.int64)
        cache = self.collection.path / "cache"
        try:
            for old in cache.glob(f"{PREFIX}*"):
                shutil.rmtree(old, ignore_errors=True)
            if items:  # written aside and renamed into place: a reader never sees half an index
                cache.mkdir(exist_ok=True)
                tmp = Path(tempfile.mkdtemp(prefix=f".{PREFIX}", dir=cache))
                retriever.save(str(tmp))
                np.save(tmp / "vids.npy", self._vids)
                fsync_tree(tmp)
                os.replace(tmp, self._folder(generation))
        except OSError as e:  # a read-only collection still searches, from memory
            log.warning("keyword index not cached: %s", e)

    def search(self, text: str, k: int, allowed: np.ndarray | None = None,
               exclude: Sequence[int] = ()) -> tuple[np.ndarray, np.ndarray]:
        """The vids of up to ``k`` items matching some word of ``text``, best BM25 score first, and
        their scores (items matching no word are not returned); only vids in ``allowed`` when
        given, never those in ``exclude``."""
        with self._lock:
            self._sync()
            if not len(self._vids) or k < 1:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            tokens = self._tokenize([text], False)
            if not tokens[0]:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            mask = None
            if allowed is not None or exclude:
                keep = np.ones(len(self._vids), bool) if allowed is None else np.isin(self._vids, allowed)
                keep &= ~np.isin(self._vids, np.asarray(exclude, np.int64))
                mask = keep.astype(np.float32)
            docs, scores = self._retriever.retrieve(tokens, k=min(k, len(self._vids)), show_progress=False,
                                                    n_threads=1, weight_mask=mask)
            keep = scores[0] > 0
            return self._vids[docs[0][keep]], scores[0][keep].astype(np.float32)
