"""The run configs, one dataclass per ``kind``, each validating its sections together."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vestis.data.captions import template_fields
from vestis.encoders.onnx_encoder import FEATURE_MAPS
from vestis.encoders.text import DEFAULT_TEXT_ENCODER
from vestis.errors import VestisError
from vestis.train.config.sections import (
    CE_KINDS,
    CLASS_INITS,
    CLASS_SAMPLINGS,
    CLASSIFIERS,
    GALLERIES,
    HEAD_KINDS,
    MINERS,
    SCHEDULES,
    TRIPLET_KINDS,
    DataConfig,
    EvalConfig,
    ExportConfig,
    FinetuneConfig,
    HeadConfig,
    LrFinderConfig,
    TrainConfig,
    TransferSetConfig,
    check_anchor,
    check_choice,
    check_cross_set,
    check_split_usage,
)

RUN_KINDS = {
    "embedding": "an embedding head on the frozen backbone's features, stage 1",
    "finetune": "the backbone fine-tuned with its head on images, stage 2",
    "attributes": "attribute-aware embeddings, one space per attribute",
    "joint": "a joint text-image space for search in words",
}


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
        check_choice("kind", self.kind, ("embedding", "finetune"))
        self._validate_data_and_training()
        if not self.data.labels:
            raise VestisError("data.labels: name at least one metadata column to learn")
        check_choice("head.kind", self.head.kind, HEAD_KINDS)
        check_choice("head.miner", self.head.miner, MINERS)
        check_choice("head.class_init", self.head.class_init, CLASS_INITS)
        check_choice("head.classifier", self.head.classifier, CLASSIFIERS)
        check_choice("head.class_sampling", self.head.class_sampling, CLASS_SAMPLINGS)
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
        check_choice("train.schedule", self.train.schedule, SCHEDULES)
        check_choice("eval.gallery", self.eval.gallery, GALLERIES)
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
        check_choice("kind", self.kind, ("attributes",))
        if not self.model.attributes:
            raise VestisError("model.attributes: name the label columns to learn one embedding space for")
        if len(set(self.model.attributes)) != len(self.model.attributes):
            raise VestisError(f"model.attributes lists an attribute twice: {self.model.attributes}")
        self._validate_data_and_training(self.model.attributes)
        check_choice("model.feature_map", self.model.feature_map, tuple(FEATURE_MAPS))
        check_choice("head.miner", self.head.miner, ("batch-hard", "none"))
        check_choice("head.class_sampling", self.head.class_sampling, CLASS_SAMPLINGS)
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
    # share of training pairs whose text is, in each batch, its variant in the vocabulary's
    # synonyms (vestis.data.captions.substitute_synonyms; one seeded variant per text); 0: none
    synonym_rate: float = 0.0


@dataclass
class JointRunConfig(RunConfig):
    """A joint text-image run (``kind: joint``, :mod:`vestis.train.joint`): the sections of
    :class:`RunConfig` plus ``text``. ``head.dim`` is the joint dimension; ``data.labels`` only
    stratifies the split by id (use the image heads' columns to share their test split)."""

    kind: str = "joint"
    text: TextSideConfig = field(default_factory=TextSideConfig)

    def validate(self) -> JointRunConfig:
        check_choice("kind", self.kind, ("joint",))
        self._validate_data_and_training()
        if self.text.column is None and not self.text.templates:
            raise VestisError("text: give a title `column` or caption `templates` (or both)")
        for template in self.text.templates:
            template_fields(template)
        if self.head.dim < 2 or self.text.hidden < 0 or not 0 < self.text.temperature < 1:
            raise VestisError("head.dim must be >= 2, text.hidden >= 0 and 0 < text.temperature < 1")
        if not 0 <= self.text.synonym_rate <= 1:
            raise VestisError(f"text.synonym_rate must be between 0 and 1 (got {self.text.synonym_rate})")
        check_anchor(self.head)
        if self.head.backbone_weight or self.head.distill or self.head.interpolate != 1:
            raise VestisError("head.backbone_weight, head.distill and head.interpolate apply to the image heads, "
                              "not to the joint space (use head.residual and head.anchor)")
        return self


CONFIG_CLASSES: dict[str, type[RunConfig]] = {
    "embedding": RunConfig, "finetune": RunConfig, "attributes": AttributeRunConfig, "joint": JointRunConfig}
