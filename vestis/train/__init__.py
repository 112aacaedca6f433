"""Training better fashion embeddings on a user's own labels (``vestis train``).

A config declares what it trains with ``kind:`` (:mod:`vestis.train.config`): ``embedding``, an
embedding head (ArcFace / CosFace / sub-center ArcFace, triplet, cross-entropy, cross-entropy +
triplet) on the frozen backbone's features stored in a collection; ``finetune``, the backbone
fine-tuned with the head on augmented images; ``attributes``, one embedding space per attribute
(:mod:`vestis.train.attributes`); ``joint``, a text-image space for search in words
(:mod:`vestis.train.joint`). A trained model is exported to ONNX with its sidecar and used like any
other encoder. Entry point: :func:`train_from_config`.
"""

from vestis.train.command import train_from_config

__all__ = ["train_from_config"]
