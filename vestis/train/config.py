"""Training configuration: one YAML file per experiment, loaded into dataclasses.

Every config declares what it trains with ``kind:`` (:data:`RUN_KINDS`): ``embedding`` (an
embedding head on the frozen backbone's features, stage 1), ``finetune`` (the backbone tuned with
its head on images, stage 2), ``attributes`` (one embedding space per attribute) or ``joint`` (a
text-image space for search in words). :func:`load_config` parses each kind into its dataclass
(:class:`RunConfig`, :class:`AttributeRunConfig`, :class:`JointRunConfig`); ``vestis train``
dispatches on ``kind``.

Keys not given take the defaults below; ``--set section.key=value`` overrides any key after the
file is read (the value is parsed as YAML, so ``--set train.lr=3e-4``, ``--set head.kind=ce+triplet``
and ``--set data.labels=[articleType]`` all work). Unknown keys and badly typed values are refused
with a message that names the key, so a typo never trains silently with a default.

Relative paths in a config are relative to the working directory (run from the project root).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vestis.data.captions import template_fields
from vestis.encoders.onnx_encoder import FEATURE_MAPS
from vestis.encoders.text import DEFAULT_TEXT_ENCODER
from vestis.errors import VestisError

RUN_KINDS = {
    "embedding": "an embedding head on the frozen backbone's features, stage 1",
    "finetune": "the backbone fine-tuned with its head on images, stage 2",
    "attributes": "attribute-aware embeddings, one space per attribute",
    "joint": "a joint text-image space for search in words",
}

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


@dataclass
class RunConfig:
    """An image-head run: ``kind`` embedding (stage 1) or finetune (stage 2)."""

    name: str
    kind: str = "embedding"
    output: str | None = None  # default: runs/<name>
    data: DataConfig = field(default_factory=DataConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    lr_finder: LrFinderConfig = field(default_factory=LrFinderConfig)
    transfer: list[TransferSetConfig] = field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return Path(self.output or Path("runs") / self.name)

    @property
    def stage(self) -> int:
        """2 for fine-tuning (the backbone trains, on images), 1 for the runs on frozen features."""
        return 2 if self.kind == "finetune" else 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> RunConfig:
        """Refuse settings that cannot work, before any data is read."""
        _choice("kind", self.kind, ("embedding", "finetune"))
        self._validate_data_and_training()
        if not self.data.labels:
            raise VestisError("data.labels: name at least one metadata column to learn")
        _choice("head.kind", self.head.kind, HEAD_KINDS)
        _choice("head.miner", self.head.miner, MINERS)
        _choice("head.class_init", self.head.class_init, CLASS_INITS)
        _choice("head.classifier", self.head.classifier, CLASSIFIERS)
        _choice("head.class_sampling", self.head.class_sampling, CLASS_SAMPLINGS)
        if self.head.class_sampling != "uniform" and self.head.kind not in TRIPLET_KINDS:
            raise VestisError(f"head.class_sampling draws the classes of M-per-class batches, which only the "
                              f"triplet kinds use; head.kind is {self.head.kind} (its batches are shuffled items)")
        if self.head.margin is not None and (self.head.margin < 0 or self.head.kind == "triplet" or (
                self.head.kind in CE_KINDS and self.head.classifier == "linear")):
            raise VestisError(f"head.margin={self.head.margin}: a margin >= 0 for the margin softmax kinds "
                              f"and the ce kinds' cosine or subcenter-arcface classifier; head.kind is "
                              f"{self.head.kind}, head.classifier {self.head.classifier}")
        if self.head.class_init == "means" and self.head.kind not in ("arcface", "cosface"):
            raise VestisError(f"head.class_init=means starts the class weights of arcface and cosface heads; "
                              f"head.kind is {self.head.kind}")
        _choice("train.schedule", self.train.schedule, SCHEDULES)
        _choice("eval.gallery", self.eval.gallery, GALLERIES)
        if self.head.dim < 2 or self.head.m_per_class < 2 or self.head.sub_centers < 1:
            raise VestisError("head.dim and head.m_per_class must be at least 2, head.sub_centers at least 1")
        if not 0 <= self.head.backbone_weight < 1 or self.head.distill < 0:
            raise VestisError("head.backbone_weight must be in [0, 1) and head.distill >= 0")
        if self.stage == 2 and (self.head.backbone_weight or self.head.distill or self.head.class_init != "random"):
            raise VestisError("head.backbone_weight, head.distill and head.class_init work on the frozen backbone's "
                              "features: kind embedding (stage 1) only")
        if self.stage == 2 and self.head.residual and not self.finetune.init:
            raise VestisError("a residual head in stage 2 starts from its stage-1 checkpoint (finetune.init), "
                              "which holds its centre, the mean of the untuned backbone's features")
        check_anchor(self.head)
        if not 0 <= self.finetune.background <= 1 or self.finetune.blur < 0:
            raise VestisError(f"finetune.background is a probability (0..1) and finetune.blur a radius >= 0, got "
                              f"{self.finetune.background} and {self.finetune.blur}")
        if self.eval.labels is not None and not self.eval.labels:
            raise VestisError("eval.labels: name at least one column, or leave it out to judge by data.labels")
        return self

    def _validate_data_and_training(self, attributes: list[str] | None = None) -> None:
        """The checks every kind of run shares: one data source, a sane loop, a held-out test split,
        transfer sets that can be scored (in one of ``attributes``' spaces for an attribute-aware model)."""
        if (self.data.collection is None) == (self.data.source is None):
            raise VestisError("data: give exactly one of `collection` (a vestis collection directory) "
                              "or `source` (a catalogue folder, zip or dataset name)")
        if self.train.epochs < 1 or self.train.batch_size < 2 or self.train.lr <= 0:
            raise VestisError("train.epochs must be >= 1, train.batch_size >= 2 and train.lr > 0")
        if not 0 <= self.train.average_from <= self.train.epochs:
            raise VestisError(f"train.average_from is the epoch weight averaging starts at (1 to train.epochs = "
                              f"{self.train.epochs}; 0: no averaging), got {self.train.average_from}")
        check_split_usage(self.train)
        if self.kind != "finetune" and self.finetune != FinetuneConfig():
            raise VestisError(f"the finetune section sets up fine-tuning (kind: finetune); this run is kind: "
                              f"{self.kind}")
        for i, tset in enumerate(self.transfer):
            if tset.label_map is not None:
                check_cross_set(i, tset, attributes is not None)
                continue
            if not tset.collection or not tset.label:
                raise VestisError(f"transfer[{i}]: a transfer set names a `collection` and the `label` column "
                                  "to judge by (or a `label_map` to query another collection)")
            if tset.gallery is not None or tset.queries != "all":
                raise VestisError(f"transfer[{i}]: `gallery` and `queries` belong to a cross-collection set, "
                                  "which names a `label_map`")
            if attributes is None and tset.attribute is not None:
                raise VestisError(f"transfer[{i}].attribute chooses the embedding space of an attribute-aware model "
                                  "(a config with a `model` section); this run trains one embedding for everything")
            if attributes is not None and tset.space not in attributes:
                raise VestisError(f"transfer[{i}]: an attribute-aware model scores a set in one attribute's space, and "
                                  f"{tset.space!r} is not one of model.attributes ({', '.join(attributes)}): "
                                  "name one with `attribute`")
        titles = [t.title for t in self.transfer]
        if len(set(titles)) != len(titles):
            raise VestisError(f"transfer: two sets are called the same ({', '.join(titles)}): give them `name`s")


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
    _choice(f"transfer[{i}].queries", tset.queries, QUERY_HALVES)


@dataclass
class AttributeModelConfig:
    """The attribute-aware model (:mod:`vestis.train.attributes`): which label columns become
    attributes, and its sizes."""

    attributes: list[str] = field(default_factory=list)
    feature_map: str = "14x14"
    attribute_dim: int = 64  # size of the learned attribute embedding e_a
    hidden: int = 64  # width of the spatial and channel attention
    global_branch: bool = True
    dropout: float = 0.1
    max_train_items: int = 0  # > 0: train on this many training items (seeded sample), to bound epoch time


@dataclass
class AttributeRunConfig(RunConfig):
    """A training run of the attribute model (``kind: attributes``): the sections of
    :class:`RunConfig` plus ``model``.

    ``head.dim`` is the embedding size per attribute, ``head.residual`` and ``head.anchor`` start
    each space from the backbone's global embedding and keep it near (see
    :mod:`vestis.train.attributes`), ``head.triplet_margin`` the cosine margin,
    ``head.m_per_class`` the pairs per (attribute, value) in a batch, ``head.miner`` batch-hard or
    none; ``data.labels`` only stratifies the split (use the global heads' columns to share their
    test split)."""

    kind: str = "attributes"
    model: AttributeModelConfig = field(default_factory=AttributeModelConfig)

    def validate(self) -> AttributeRunConfig:
        _choice("kind", self.kind, ("attributes",))
        if not self.model.attributes:
            raise VestisError("model.attributes: name the label columns to learn one embedding space for")
        if len(set(self.model.attributes)) != len(self.model.attributes):
            raise VestisError(f"model.attributes lists an attribute twice: {self.model.attributes}")
        self._validate_data_and_training(self.model.attributes)
        _choice("model.feature_map", self.model.feature_map, tuple(FEATURE_MAPS))
        _choice("head.miner", self.head.miner, ("batch-hard", "none"))
        _choice("head.class_sampling", self.head.class_sampling, CLASS_SAMPLINGS)
        if min(self.head.dim, self.model.attribute_dim, self.model.hidden) < 2 or self.head.m_per_class < 2:
            raise VestisError("head.dim, model.attribute_dim, model.hidden and head.m_per_class must be at least 2")
        if not 0 <= self.model.dropout < 1 or self.head.triplet_margin <= 0 or self.model.max_train_items < 0:
            raise VestisError("model.dropout must be in [0, 1), head.triplet_margin > 0 and model.max_train_items >= 0")
        if self.head.residual and not self.model.global_branch:
            raise VestisError("head.residual starts every attribute space from the global embedding: it needs "
                              "model.global_branch=true")
        check_anchor(self.head)
        if self.head.backbone_weight or self.head.distill:
            raise VestisError("head.backbone_weight and head.distill apply to the global heads, not to the "
                              "attribute model (use head.residual, head.anchor and head.interpolate)")
        return self


@dataclass
class TextSideConfig:
    """A joint run's texts (an item's title column and/or captions from its labels), the text
    tower and the heads' shape."""

    column: str | None = None  # a title column, e.g. productDisplayName
    templates: list[str] = field(default_factory=list)  # captions from label columns
    encoder: str = DEFAULT_TEXT_ENCODER
    hidden: int = 0  # > 0: each head is Linear -> GELU -> Linear with this width; 0: one Linear
    temperature: float = 0.07  # initial; learned (logit scale capped at 100 as in CLIP)


@dataclass
class JointRunConfig(RunConfig):
    """A joint text-image run (``kind: joint``, :mod:`vestis.train.joint`): the sections of
    :class:`RunConfig` plus ``text``. ``head.dim`` is the joint dimension; ``data.labels`` only
    stratifies the split by id (use the image heads' columns to share their test split)."""

    kind: str = "joint"
    text: TextSideConfig = field(default_factory=TextSideConfig)

    def validate(self) -> JointRunConfig:
        _choice("kind", self.kind, ("joint",))
        self._validate_data_and_training()
        if self.text.column is None and not self.text.templates:
            raise VestisError("text: give a title `column` or caption `templates` (or both)")
        for template in self.text.templates:
            template_fields(template)
        if self.head.dim < 2 or self.text.hidden < 0 or not 0 < self.text.temperature < 1:
            raise VestisError("head.dim must be >= 2, text.hidden >= 0 and 0 < text.temperature < 1")
        check_anchor(self.head)
        if self.head.backbone_weight or self.head.distill or self.head.interpolate != 1:
            raise VestisError("head.backbone_weight, head.distill and head.interpolate apply to the image heads, "
                              "not to the joint space (use head.residual and head.anchor)")
        return self


CONFIG_CLASSES: dict[str, type[RunConfig]] = {
    "embedding": RunConfig, "finetune": RunConfig, "attributes": AttributeRunConfig, "joint": JointRunConfig}


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
        _choice("split name", name, SPLIT_NAMES)
    if "test" in train.train_splits or train.val_split == "test":
        raise VestisError("the test split is held out: it can be neither a training split nor the validation "
                          "split used for early stopping (set train.val_split=val)")
    if train.val_split in train.train_splits:
        raise VestisError(f"train.val_split {train.val_split!r} is also a training split: early stopping "
                          "would select on training data")


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise VestisError(f"{key}: {value!r} is not one of {', '.join(allowed)}")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file's mapping of sections, or a clear error."""
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise VestisError(f"cannot read config {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise VestisError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(loaded, dict):
        raise VestisError(f"{path}: a config is a YAML mapping of sections (data, head, train, ...)")
    return loaded


def config_from_dict(raw: dict[str, Any], where: str = "config") -> RunConfig:
    """The validated run config of a mapping (a file's, or a checkpoint's), of the dataclass of its
    ``kind``; ``where`` names the mapping in errors."""
    kinds = "; ".join(f"{name} ({what})" for name, what in RUN_KINDS.items())
    if "stage" in raw:
        raise VestisError(f"{where}: say what the run trains with `kind:` instead of `stage:` (stage 1 is "
                          f"`kind: embedding`, stage 2 `kind: finetune`); the kinds: {kinds}")
    kind = raw.get("kind")
    if kind is None:
        raise VestisError(f"{where}: no `kind:`; a config declares what it trains, one of: {kinds}")
    if kind not in CONFIG_CLASSES:
        raise VestisError(f"{where}: kind {kind!r} is not one of: {kinds}")
    return _build(CONFIG_CLASSES[kind], raw, "").validate()


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config of any kind, apply ``key=value`` overrides and validate."""
    raw = read_yaml(path)
    for item in overrides or []:
        apply_override(raw, item)
    raw.setdefault("name", Path(path).stem)
    return config_from_dict(raw, str(path))


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) in the nested dict ``raw``."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise VestisError(f"an override is key=value with a dotted key, e.g. head.kind=arcface (got {item!r})")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as e:
        raise VestisError(f"override {item!r}: the value is not valid YAML ({e})") from e
    *parents, leaf = key.strip().split(".")
    node = raw
    for p in parents:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise VestisError(f"override {item!r}: {p} is not a section")
        node = child
    node[leaf] = value


def _build(cls: type, raw: Any, where: str) -> Any:
    """Make dataclass ``cls`` from a mapping, checking keys and value types."""
    if not isinstance(raw, dict):
        raise VestisError(f"{where or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise VestisError(f"unknown config key {where}{unknown[0]} (known in this section: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in raw.items():
        hint = hints[name]
        key = f"{where}{name}"
        kwargs[name] = _build(hint, value, key + ".") if dataclasses.is_dataclass(hint) else _check(hint, value, key)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise VestisError(f"{where.rstrip('.') or 'config'}: {e}") from e


def _check(hint: Any, value: Any, key: str) -> Any:
    """``value`` converted to the annotated type (int or numeric text -> float and number -> str allowed), or a clear error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        if not isinstance(value, list):
            raise VestisError(f"{key}: expected a list, got {value!r}")
        if dataclasses.is_dataclass(args[0]):
            return [_build(args[0], v, f"{key}[{i}].") for i, v in enumerate(value)]
        return [_check(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise VestisError(f"{key}: expected a mapping, got {value!r}")
        return value
    if hint is float and isinstance(value, int | str) and not isinstance(value, bool):
        try:
            return float(value)  # PyYAML reads 1e-4 (no dot) as a string
        except ValueError:
            pass
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # YAML reads version: 2 as a number
    if hint is Any or (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise VestisError(f"{key}: expected {hint.__name__}, got {value!r}")
