"""The image-encoder contract: every encoder declares its input, preprocessing, output and version."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
from PIL import Image


class ImageEncoder(ABC):
    """Maps images to L2-normalised vectors.

    ``version`` identifies the exact weights + preprocessing; a collection records it and refuses
    queries embedded by an encoder with another version.
    """

    name: str
    version: str
    source: str  # what get_encoder takes to open this encoder again: a built-in name or a model path
    input_size: tuple[int, int]  # (height, width) fed to the network
    dim: int  # output dimension of ``embed``

    @abstractmethod
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Deterministic Pillow + NumPy preprocessing of one RGB image to a CHW float32 array."""

    @abstractmethod
    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """Embed a preprocessed NCHW float32 batch; returns N x dim float32, rows L2-normalised."""

    @abstractmethod
    def feature_maps(self, batch: np.ndarray) -> np.ndarray:
        """Spatial feature maps (N x C x h x w float32) of a preprocessed batch, before pooling."""

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Preprocess and embed PIL images (convenience for queries and tests)."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_batch(np.stack([self.preprocess(im) for im in images]))
