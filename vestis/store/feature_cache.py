"""Backbone outputs computed once and kept on disk: spatial feature maps (float16, memory-mapped).

An attribute-aware model trains on the backbone's 14 x 14 feature map of every item, and the
stored vectors of a collection do not keep it. Computing it is one forward pass per image (minutes
of CPU for a large catalogue), so :func:`cached_features` computes the requested encoder outputs
once and keeps them as ``.npy`` files that later runs open memory-mapped (float16, about 44 kB per
item for 14 x 14 x 112 maps; training reads the rows it needs)::

    <directory>/features-<key>.json                 ids, change keys, rows, shapes, encoder version
    <directory>/features-<key>-<token>-<output>.npy one N x ... float16 array per output

``<key>`` hashes the encoder version and the output names, so another encoder or preprocessing
never reads these files. An item is identified by its id and a change key (the catalogue's change
stamp, or a collection's content hash): items already cached are reused, new or changed ones are
computed and the arrays rewritten under a new token; the JSON pointer is replaced (atomic
rename) every few thousand new rows and at the end, so a killed run keeps what it computed and the
next run goes on from there. Collections keep theirs in
``<collection>/features/``; catalogues in the training run's feature cache folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vestis.encoders.base import ImageEncoder
from vestis.encoders.onnx_encoder import OnnxEncoder
from vestis.errors import VestisError
from vestis.store.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

DTYPE = np.float16  # halves the disk and page-cache footprint; the maps are post-ReLU6 activations
COPY_ROWS = 2048  # rows copied at a time when an existing cache is extended
CHECKPOINT_ROWS = 4096  # new rows between two updates of the pointer: a killed run keeps them


@dataclass
class CachedFeatures:
    """Cached outputs: ``arrays[name]`` is a read-only N x ... float16 memory map; ``row[id]`` the
    row of an item and ``key[id]`` the change key it was computed for (items whose image could
    not be read have neither)."""

    encoder_version: str
    row: dict[str, int]
    key: dict[str, str]
    arrays: dict[str, np.ndarray]

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        """Rows of ``ids`` (all must be cached)."""
        missing = [i for i in ids if i not in self.row]
        if missing:
            raise VestisError(f"{len(missing)} item(s) have no cached features (e.g. {missing[0]!r})")
        return np.fromiter((self.row[i] for i in ids), np.int64, len(ids))


class OutputsAsVectors(ImageEncoder):
    """Presents the named outputs of an ONNX encoder, flattened side by side, as its "embedding",
    so the batched decoding pipeline (:func:`vestis.encoders.pipeline.embed_items`) computes them."""

    def __init__(self, encoder: OnnxEncoder, outputs: Sequence[str], shapes: dict[str, tuple[int, ...]]):
        self.encoder, self.outputs, self.shapes = encoder, list(outputs), shapes
        self.name, self.version, self.input_size = encoder.name, encoder.version, encoder.input_size
        self.source = encoder.source
        self.dim = sum(int(np.prod(shapes[n])) for n in self.outputs)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.encoder.preprocess(image)

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        out = self.encoder.infer(batch, self.outputs)
        return np.concatenate([out[n].reshape(len(batch), -1) for n in self.outputs], axis=1)

    def feature_maps(self, batch: np.ndarray) -> np.ndarray:
        return self.encoder.feature_maps(batch)

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """The flattened rows back into one array per output."""
        parts, start = {}, 0
        for name in self.outputs:
            size = int(np.prod(self.shapes[name]))
            parts[name] = flat[:, start : start + size].reshape(len(flat), *self.shapes[name])
            start += size
        return parts


def output_shapes(encoder: OnnxEncoder, outputs: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Per-item shape of each named output (one dummy inference)."""
    unknown = [n for n in outputs if n not in encoder.output_names]
    if unknown:
        raise VestisError(
            f"encoder {encoder.name} has no output {unknown[0]!r} (it has {', '.join(encoder.output_names)})"
        )
    probe = encoder.infer(np.zeros((0, 3, *encoder.input_size), np.float32), list(outputs))
    return {n: tuple(probe[n].shape[1:]) for n in outputs}


def _pointer(directory: Path, encoder: OnnxEncoder, outputs: Sequence[str]) -> Path:
    key = hashlib.sha256(json.dumps([encoder.version, list(outputs)]).encode()).hexdigest()[:12]
    return directory / f"features-{key}.json"


def _open(pointer: Path, encoder: OnnxEncoder, outputs: Sequence[str]) -> tuple[dict, dict[str, np.ndarray]]:
    """The cache's pointer and arrays, or empty ones when absent, foreign or damaged."""
    try:
        state = json.loads(pointer.read_text())
        if state["encoder_version"] != encoder.version or list(state["outputs"]) != list(outputs):
            raise ValueError("another encoder or other outputs")
        arrays = {n: np.load(pointer.parent / state["outputs"][n], mmap_mode="r") for n in outputs}
        if any(len(a) != state["n_rows"] for a in arrays.values()):
            raise ValueError("row count mismatch")
        return state, arrays
    except FileNotFoundError:
        return {}, {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("feature cache %s is unusable (%s); computing it again", pointer, e)
        return {}, {}


def open_cached(directory: Path, encoder: OnnxEncoder, outputs: Sequence[str]) -> CachedFeatures:
    """What the cache in ``directory`` holds for this encoder and outputs (empty when nothing)."""
    state, arrays = _open(_pointer(Path(directory), encoder, outputs), encoder, outputs)
    ids, keys, rows = state.get("ids", []), state.get("keys", []), state.get("rows", [])
    return CachedFeatures(encoder.version, dict(zip(ids, rows)), dict(zip(ids, keys)), arrays)


def _view(
    encoder: OnnxEncoder, cached: dict[tuple[str, str], int], wanted: set[str], arrays: dict[str, np.ndarray]
) -> CachedFeatures:
    chosen = {(i, k): r for (i, k), r in cached.items() if i in wanted}
    return CachedFeatures(
        encoder.version, {i: r for (i, _k), r in chosen.items()}, {i: k for (i, k) in chosen}, arrays
    )


def cached_features(
    items: Sequence[tuple[str, str, Callable[[], bytes]]],
    encoder: OnnxEncoder,
    directory: Path,
    outputs: Sequence[str],
    *,
    batch_size: int = 32,
    progress: bool = True,
) -> CachedFeatures:
    """The ``outputs`` of ``encoder`` for ``items`` (``(id, change key, read)``), computed for the
    items not cached yet. Unreadable images are logged and have no row."""
    directory = Path(directory)
    pointer = _pointer(directory, encoder, outputs)
    state, old = _open(pointer, encoder, outputs)
    cached = {
        (i, k): r for i, k, r in zip(state.get("ids", []), state.get("keys", []), state.get("rows", []))
    }
    todo = [(i, k, read) for i, k, read in items if (i, k) not in cached]
    wanted = {i for i, _k, _r in items}
    if not todo:
        return _view(encoder, cached, wanted, old)
    from vestis.encoders.pipeline import embed_items

    shapes = output_shapes(encoder, outputs)
    adapter = OutputsAsVectors(encoder, outputs, shapes)
    keys = {i: k for i, k, _r in todo}
    kept = sorted(
        ((r, i, k) for (i, k), r in cached.items() if i not in keys)
    )  # changed items: old rows dropped
    cached = {(i, k): row for row, (_r, i, k) in enumerate(kept)}
    n_rows = len(kept) + len(todo)
    token = secrets.token_hex(4)
    files = {n: f"{pointer.stem}-{token}-{n}.npy" for n in outputs}
    directory.mkdir(parents=True, exist_ok=True)
    new = {
        n: np.lib.format.open_memmap(directory / files[n], mode="w+", dtype=DTYPE, shape=(n_rows, *shapes[n]))
        for n in outputs
    }
    published = False

    def publish() -> None:
        """Point the cache at the new arrays and the rows written so far; the old arrays go."""
        nonlocal published
        for array in new.values():
            array.flush()
        ids, change_keys = zip(*cached) if cached else ((), ())
        atomic_write_bytes(
            pointer,
            json.dumps(
                {
                    "encoder_version": encoder.version,
                    "outputs": files,
                    "n_rows": n_rows,
                    "shapes": {n: list(s) for n, s in shapes.items()},
                    "dtype": np.dtype(DTYPE).name,
                    "ids": list(ids),
                    "keys": list(change_keys),
                    "rows": list(cached.values()),
                }
            ).encode(),
        )
        if not published:
            for name in state.get("outputs", {}).values():
                (directory / name).unlink(missing_ok=True)
        published = True

    try:
        old_rows = np.array([r for r, _i, _k in kept], np.int64)
        for name, array in old.items():
            for start in range(0, len(old_rows), COPY_ROWS):
                chunk = old_rows[start : start + COPY_ROWS]
                new[name][start : start + len(chunk)] = array[chunk]
        row, failures, last_published = len(kept), 0, len(kept)
        for batch in embed_items(
            adapter,
            ((i, read) for i, _k, read in todo),
            batch_size=batch_size,
            with_colour=False,
            progress=progress,
            total=len(todo),
        ):
            for name, part in adapter.split(batch.vectors).items():
                new[name][row : row + len(batch.keys)] = part
            for i in batch.keys:
                cached[i, keys[i]] = row
                row += 1
            failures += len(batch.failures)
            for key, reason in batch.failures[:3]:
                log.warning("no features for %s: %s", key, reason)
            if row - last_published >= CHECKPOINT_ROWS:  # an interrupted run resumes from here
                publish()
                last_published = row
        publish()
    except BaseException:
        if not published:
            for name in files.values():
                (directory / name).unlink(missing_ok=True)
        raise
    if failures:
        log.warning("%d image(s) could not be read and have no features", failures)
    return _view(encoder, cached, wanted, {n: np.load(directory / files[n], mmap_mode="r") for n in outputs})
