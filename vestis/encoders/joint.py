"""A joint text-image space: two small heads over frozen image and text encoders.

``vestis train`` with a ``text`` section (:mod:`vestis.train.joint`) writes ``joint.json`` beside
``image_head.onnx`` (the image encoder's pooled vector -> joint space) and ``text_head.onnx`` (the
text encoder's sentence vector -> joint space). The sidecar names both towers by version, so an
item vector is only ever projected from the image encoder the heads were trained on, and a
query's text only through the text encoder they were trained with. Runs on onnxruntime alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vestis.encoders.onnx_encoder import EMBEDDING, open_session
from vestis.encoders.text import TextEncoder, get_text_encoder
from vestis.errors import VestisError

MODEL_KIND = "vestis-joint-model"
SIDECAR = "joint.json"
IMAGE_INPUT, TEXT_INPUT = "image_features", "text_features"


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


class JointModel:
    """Opened from ``joint.json`` (or the folder holding it). ``version`` changes with either head
    file; ``image_encoder_version`` is the version of the image encoder whose vectors it projects."""

    def __init__(self, path: str | Path, *, threads: int | None = None):
        path = Path(path)
        sidecar = path / SIDECAR if path.is_dir() else path
        try:
            meta: dict[str, Any] = json.loads(sidecar.read_text())
        except FileNotFoundError:
            raise VestisError(f"no joint text-image model at {path} (expected {SIDECAR} from `vestis train`)") from None
        except (OSError, ValueError) as e:
            raise VestisError(f"cannot read the joint model {sidecar}: {e}") from e
        if not isinstance(meta, dict) or meta.get("kind") != MODEL_KIND:
            raise VestisError(f"{sidecar} is not a joint text-image model (kind {MODEL_KIND})")
        self.meta, self.path = meta, sidecar.resolve()
        files = [sidecar.parent / meta["image_head"], sidecar.parent / meta["text_head"]]
        for f in files:
            if not f.is_file():
                raise VestisError(f"the joint model {sidecar} lacks {f.name}")
        self._image = open_session(files[0], threads)
        self._text = open_session(files[1], threads)
        self._threads = threads
        self._text_encoder: TextEncoder | None = None
        digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
        self.name = str(meta["name"])
        self.version = f"{self.name}/{meta.get('version', '1')}/sha256:{digest}"
        self.dim = int(meta["dim"])
        self.image_encoder_version = str(meta["image_encoder_version"])
        self.logit_scale = float(meta.get("logit_scale", 1.0))

    @property
    def text_encoder(self) -> TextEncoder:
        """The text tower (opened on first use: indexing items needs only the image head)."""
        if self._text_encoder is None:
            encoder = get_text_encoder(self.meta["text_encoder"], threads=self._threads)
            if encoder.version != self.meta["text_encoder_version"]:
                raise VestisError(f"{self.path} was trained with text encoder {self.meta['text_encoder_version']}, "
                                  f"this installation has {encoder.version}: train the joint model again")
            self._text_encoder = encoder
        return self._text_encoder

    def embed_image_features(self, vectors: np.ndarray) -> np.ndarray:
        """Image-encoder vectors (N x D) -> joint-space vectors (N x dim, L2-normalised)."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        if vectors.ndim != 2:
            raise VestisError(f"image features must be N x D, got shape {vectors.shape}")
        if not len(vectors):
            return np.zeros((0, self.dim), np.float32)
        return _normalise(self._image.run([EMBEDDING], {IMAGE_INPUT: vectors})[0])

    def embed_text_features(self, vectors: np.ndarray) -> np.ndarray:
        """Text-encoder vectors (N x 384) -> joint-space vectors (N x dim, L2-normalised)."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        if not len(vectors):
            return np.zeros((0, self.dim), np.float32)
        return _normalise(self._text.run([EMBEDDING], {TEXT_INPUT: vectors})[0])

    def embed_text(self, texts: Sequence[str] | str) -> np.ndarray:
        """Sentences -> joint-space vectors (N x dim, L2-normalised)."""
        return self.embed_text_features(self.text_encoder.embed(texts))
