"""Training better fashion embeddings on a user's own labels (``vestis train``).

Stage 1 trains an embedding head (ArcFace / CosFace / sub-center ArcFace, triplet, cross-entropy,
cross-entropy + triplet) on frozen-backbone features cached in a collection; stage 2 fine-tunes
the backbone with the head on augmented images. A trained model is exported to ONNX with its
preprocessing sidecar and used like any other encoder. Entry point: :func:`train_from_config`.
"""

from vestis.train.command import train_from_config

__all__ = ["train_from_config"]
