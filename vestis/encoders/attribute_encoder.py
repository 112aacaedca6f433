"""Run an exported attribute model (``vestis train`` with ``kind: attributes``) with onnxruntime.

The ONNX graph (see :mod:`vestis.train.attributes.export`) maps the backbone's feature map and
global embedding to ``attribute_embeddings`` (N x attributes x dim, each L2-normalised). Its
sidecar ``<model>.json`` names the backbone and the exact encoder version it was trained on, the
attributes, and the embedding size. :class:`AttributeEncoder` runs the built-in backbone once per
batch for both inputs, then the head; ``embed_features`` takes features computed elsewhere (the
feature cache), so indexing a catalogue whose maps are cached costs no backbone pass.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from vestis.encoders.onnx_encoder import EMBEDDING, OnnxEncoder, open_session
from vestis.errors import EncoderMismatchError, VestisError

MODEL_KIND = "vestis-attribute-model"
OUTPUT = "attribute_embeddings"


class AttributeEncoder:
    """An exported attribute model and its backbone. ``version`` identifies the exact file; a
    collection's attribute index records it and refuses queries embedded by another."""

    def __init__(self, path: str | Path, *, threads: int | None = None, backbone: OnnxEncoder | None = None):
        """``backbone``: an already loaded encoder to share (used when it is the model's backbone)."""
        from vestis.encoders import get_encoder

        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise VestisError(f"attribute model {self.path} does not exist")
        sidecar = self.path.with_suffix(".json")
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as e:
            raise VestisError(f"cannot read the attribute model's sidecar {sidecar}: {e}") from e
        if not isinstance(meta, dict) or meta.get("kind") != MODEL_KIND:
            raise VestisError(
                f"{self.path} is not a vestis attribute model (its sidecar {sidecar.name} "
                f'lacks "kind": "{MODEL_KIND}"); export one with `vestis train`'
            )
        self.meta = meta
        self.attributes: list[str] = list(meta["attributes"])
        self.dim = int(meta["dim"])
        self.feature_map = str(meta["feature_map"])
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        self.version = f"{meta['name']}/{meta['version']}/sha256:{digest}"
        self._session = open_session(self.path, threads)
        self._inputs = [i.name for i in self._session.get_inputs()]
        if backbone is None or backbone.version != meta["backbone_version"]:
            backbone = get_encoder(meta["backbone"], threads=threads)
        self.backbone = backbone
        if self.backbone.version != meta["backbone_version"]:
            raise EncoderMismatchError(
                f"{self.path.name} was trained on features of {meta['backbone_version']}, but the encoder "
                f"{self.backbone.name} is now {self.backbone.version}: train the attribute model again"
            )

    @property
    def backbone_outputs(self) -> list[str]:
        """The backbone outputs the head needs (feature map, and the global embedding)."""
        return [n for n in (self.feature_map, EMBEDDING) if n in self._inputs]

    def embed_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Attribute embeddings (N x A x dim float32) from backbone outputs by name."""
        feeds = {n: np.ascontiguousarray(features[n], np.float32) for n in self._inputs}
        return self._session.run([OUTPUT], feeds)[0]

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Attribute embeddings of a preprocessed NCHW batch: N x A x dim."""
        return self.embed_features(self.backbone.infer(batch, self.backbone_outputs))

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, len(self.attributes), self.dim), np.float32)
        return self.embed_batch(np.stack([self.backbone.preprocess(im) for im in images]))

    def embed_images_with_global(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """The backbone's global embeddings (N x D, L2-normalised, what a collection built with the
        backbone stores) and the attribute embeddings (N x A x dim), from one backbone pass."""
        batch = np.stack([self.backbone.preprocess(im) for im in images])
        features = self.backbone.infer(batch, [self.feature_map, EMBEDDING])
        vectors = features[EMBEDDING].astype(np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors, self.embed_features(features)
