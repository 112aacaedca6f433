"""The sections of a training config (data, head, train, finetune, export, eval, transfer, lr_finder)
and the checks they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vestis.errors import VestisError

HEAD_KINDS = ("arcface", "cosface", "subcenter-arcface", "triplet", "ce", "ce+triplet")
CE_KINDS = ("ce", "ce+triplet")  # a classifier with cross-entropy
TRIPLET_KINDS = ("triplet", "ce+triplet")  # a triplet term, trained on M-per-class batches
CLASS_INITS = ("random", "means")
CLASSIFIERS = ("linear", "cosine", "subcenter-arcface")
MINERS = ("batch-hard", "semi-hard", "none")
CLASS_SAMPLINGS = ("uniform", "by-size")
SCHEDULES = ("cosine", "onecycle", "constant")
SPLIT_NAMES = ("train", "val", "test")
GALLERIES = ("outside-train", "train", "all")


@dataclass
class DataConfig:
    """Where the items, their features and their labels come from, and how they are split.

    Give either ``collection`` (a directory built by ``vestis index``: its stored backbone vectors
    are the stage-1 features) or ``source`` (a catalogue: folder, zip or dataset name, read with
    ``format``/``options``; its features are computed once with ``encoder`` and cached in
    ``feature_cache``, default ``<runs dir>/features``)."""

    collection: str | None = None
    source: str | None = None
    format: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    encoder: str = "efficientnet-lite0"
    feature_cache: str | None = None
    labels: list[str] = field(default_factory=lambda: ["articleType", "baseColour"])
    split_file: str | None = None  # default: <output>/split.csv, created when missing
    split_seed: int = 0
    split_fractions: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])
    official_test: bool = False  # test = items whose metadata says split=test (Fashion-MNIST)


@dataclass
class HeadConfig:
    """The embedding head (Linear -> BatchNorm1d -> L2 norm) and its loss.

    ``margin`` is in radians for ArcFace and sub-center ArcFace and the ce kinds' sub-center
    ArcFace classifier (default 0.5), and an additive cosine margin for CosFace (default 0.35) and
    the ce kinds' cosine classifier (default 0).
    ``triplet_margin`` is on L2 distances between unit vectors (0..2)."""

    kind: str = "arcface"
    dim: int = 256
    scale: float = 30.0
    margin: float | None = None
    # stage 1: keep what the backbone knew. ``distill`` weighs a term that keeps the head's
    # pairwise cosine similarities in a batch close to the backbone features'; ``backbone_weight``
    # w puts the backbone feature beside the head's output in the retrieval embedding
    # [sqrt(w) backbone, sqrt(1 - w) head], so its cosine similarity is w x the backbone's + (1 - w) x the head's.
    distill: float = 0.0
    backbone_weight: float = 0.0
    # ``residual``: the head is the centred backbone feature plus a learned correction of rank
    # ``dim`` that starts at zero (the output keeps the backbone's size); ``anchor`` weighs a
    # penalty on the correction's squared norm (pulls the head towards the identity);
    # ``interpolate`` a scales the correction in the retrieval embedding, W = I + a A (1: as trained).
    residual: bool = False
    anchor: float = 0.0
    interpolate: float = 1.0
    class_init: str = "random"  # means: margin-softmax class weights start at the class means of the head's output
    sub_centers: int = 3
    triplet_margin: float = 0.2
    triplet_weight: float = 1.0  # weight of the triplet term in ce+triplet
    # the ce kinds' classifier: linear (a linear layer's logits), cosine (normalised softmax:
    # ``scale`` x the cosine between the embedding and each class weight, both unit length) or
    # subcenter-arcface (``sub_centers`` class weights per class, the closest taken, with
    # ArcFace's angular margin)
    classifier: str = "linear"
    miner: str = "batch-hard"
    m_per_class: int = 4  # samples per class in a batch for the triplet kinds
    # how those batches draw their classes: uniform (each class as often) or by-size (in proportion
    # to its number of items, as the catalogue holds them)
    class_sampling: str = "uniform"


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    patience: int = 5  # stop after this many epochs without a better validation mAP@10 (0: never)
    # > 0: stochastic weight averaging. From this epoch on, the model validated, kept and exported
    # is the uniform average of the weights at the end of every epoch since (0: the weights as trained)
    average_from: int = 0
    seed: int = 0
    device: str = "auto"  # auto: cuda when available, else cpu
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    val_split: str = "val"
    resume: str | None = None  # a checkpoint (last.pt) to continue from
    progress: bool = True


@dataclass
class FinetuneConfig:
    """Stage 2: the backbone is unfrozen and trained with a lower learning rate on augmented images.

    ``init`` is a stage-1 checkpoint whose head (and loss weights) start stage 2. Colour jitter of
    saturation and hue is disabled when ``preserve_colour`` is true; ``None`` decides from the label
    columns (any whose name mentions colour/color). Two augmentations imitate photos taken outside a
    studio: ``background`` is the probability of replacing an image's studio backdrop (the
    near-white region joined to its border) with a random smooth colour field, ``blur`` the largest
    Gaussian blur radius in pixels (each image draws one between 0 and it)."""

    backbone: str | None = None  # default: data.encoder
    backbone_lr: float = 1e-5
    init: str | None = None
    freeze_bn: bool = True  # keep the backbone's BatchNorm statistics (small CPU batches)
    flip: bool = True
    crop_scale: list[float] = field(default_factory=lambda: [0.7, 1.0])
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.03
    preserve_colour: bool | None = None
    background: float = 0.0
    blur: float = 0.0
    workers: int = 0


@dataclass
class ExportConfig:
    onnx: bool = True
    name: str | None = None  # encoder name in the sidecar (default: the run name)
    version: str = "1"


@dataclass
class EvalConfig:
    """The final test evaluation (never used for model selection). Queries are the labelled test
    items; the gallery is ``outside-train`` (validation + test items: nothing the model trained on),
    ``train`` (the training items, Fashion-MNIST style) or ``all``. ``knn_k`` > 0 adds kNN accuracy."""

    gallery: str = "outside-train"
    ks: list[int] = field(default_factory=lambda: [1, 10, 50])
    knn_k: int = 0
    labels: list[str] | None = None  # relevance columns of the test (default: data.labels)


@dataclass
class TransferSetConfig:
    """Another collection to judge the trained model on, out of its training domain: every item
    with a ``label`` queries all the others (leave-one-out), relevant = the same label; the
    untrained backbone's stored vectors are the reference. A missing collection is skipped with a
    note unless ``required``. An attribute-aware model has one embedding space per attribute:
    ``attribute`` names the one that judges the set (default: ``label``, when the model has an
    attribute of that name).

    With a ``label_map`` (a :class:`vestis.eval.cross.LabelMap` file) the set is cross-collection
    instead: the collection's items that the map asks query ``gallery`` (default: the training
    collection, all of it: what users search), relevance from the map (street to shop: photos of
    people against the catalogue). ``queries`` keeps all of them or one half of a split by id
    (seed 0, stratified by the map's required columns): ``val`` to choose settings on, ``test`` to
    report them on."""

    collection: str = ""
    label: str = ""
    name: str | None = None  # default: the collection folder's name
    required: bool = False
    attribute: str | None = None
    label_map: str | None = None
    gallery: str | None = None
    queries: str = "all"

    @property
    def title(self) -> str:
        return self.name or Path(self.collection).name

    @property
    def space(self) -> str:
        """The attribute whose embedding an attribute-aware model scores the set with."""
        return self.attribute or self.label


@dataclass
class LrFinderConfig:
    min_lr: float = 1e-6
    max_lr: float = 1.0
    steps: int = 100



QUERY_HALVES = ("all", "val", "test")


def check_cross_set(i: int, tset: TransferSetConfig, attribute_aware: bool) -> None:
    """Refuse a cross-collection transfer set (``label_map``) that cannot be scored."""
    if not tset.collection or not tset.label_map:
        raise VestisError(f"transfer[{i}]: a cross-collection set names the query `collection` and a `label_map` "
                          "file (relevance across the collections)")
    if tset.label:
        raise VestisError(f"transfer[{i}]: a cross-collection set is judged by its label_map, not by `label` "
                          f"({tset.label!r}): leave `label` out")
    if attribute_aware or tset.attribute is not None:
        raise VestisError(f"transfer[{i}]: cross-collection sets (label_map) judge one embedding of the queries and "
                          "the gallery; an attribute-aware model has one space per attribute: use a "
                          "leave-one-out set (`label`)")
    check_choice(f"transfer[{i}].queries", tset.queries, QUERY_HALVES)



def check_anchor(head: HeadConfig) -> None:
    """``head.anchor`` (>= 0) pulls a residual head (global or attribute) towards its start;
    ``head.interpolate`` (in [0, 1]) scales its learned correction in the retrieval embedding."""
    if head.anchor < 0:
        raise VestisError(f"head.anchor must be >= 0, got {head.anchor}")
    if head.anchor and not head.residual:
        raise VestisError("head.anchor pulls a residual head towards its start, the backbone feature: "
                          "set head.residual=true (a projection head has no such start to keep)")
    if not 0 <= head.interpolate <= 1:
        raise VestisError(f"head.interpolate in [0, 1], got {head.interpolate}")
    if not head.residual and head.interpolate != 1:
        raise VestisError("head.interpolate scales a residual head's correction: set head.residual=true "
                          "(a projection head has no identity to keep)")


def check_split_usage(train: TrainConfig) -> None:
    """The test split is never trained on nor used for model selection; validation is not trained on."""
    for name in [*train.train_splits, train.val_split]:
        check_choice("split name", name, SPLIT_NAMES)
    if "test" in train.train_splits or train.val_split == "test":
        raise VestisError("the test split is held out: it can be neither a training split nor the validation "
                          "split used for early stopping (set train.val_split=val)")
    if train.val_split in train.train_splits:
        raise VestisError(f"train.val_split {train.val_split!r} is also a training split: early stopping "
                          "would select on training data")


def check_choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise VestisError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
