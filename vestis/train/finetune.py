"""Stage 2: fine-tune the backbone with the head, on augmented images.

The built-in backbone (:mod:`vestis.encoders.torch_models`) is unfrozen and trained with
``finetune.backbone_lr`` (typically 10-100x below the head's ``train.lr``); its BatchNorm
statistics stay frozen by default, since CPU batches are small. The head (and the loss's class
weights) can start from a stage-1 checkpoint (``finetune.init``), which trains on the same classes;
a residual head must, since its centre (the mean untuned feature) comes from there, and then the
model starts as the stage-1 model.

Augmentation is done with Pillow + NumPy: horizontal flip, a random resized crop (area fraction
``crop_scale``, aspect ratio 3/4..4/3) and colour jitter. Saturation and hue jitter are switched off
when colour is a training target, so an augmented "red" shirt stays red. Two more imitate photos
taken outside a studio, for a model that also has to search such photos: the studio backdrop
replaced by a random smooth colour field (``background``), and blur (``blur``).
Each image's random draws are seeded by (seed, epoch, index): runs are repeatable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter
from scipy import ndimage
from torch import nn
from torch.utils.data import Dataset

from vestis.encoders.preprocess import PreprocessSpec
from vestis.errors import VestisError
from vestis.train.config import FinetuneConfig, RunConfig
from vestis.train.features import Items
from vestis.train.heads import EmbeddingHead, HeadLoss, IdentityAnchor
from vestis.train.task import TrainingTask, class_labels
from vestis.train.trainer import load_checkpoint


def colour_is_target(labels: list[str]) -> bool:
    """Whether any label column is a colour (its name mentions colour or color)."""
    return any("colour" in c.lower() or "color" in c.lower() for c in labels)


STUDIO_WHITE = 230  # a backdrop pixel: every channel at least this bright


def studio_backdrop(image: Image.Image) -> np.ndarray:
    """The mask (H x W bool) of a catalogue photo's backdrop: the near-white pixels joined to the
    image border, so a white garment inside its outline is not taken for it."""
    white = np.asarray(image.convert("RGB")).min(axis=2) >= STUDIO_WHITE
    regions, _ = ndimage.label(white)
    border = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    return np.isin(regions, border[border > 0])


def colour_field(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A random smooth backdrop: a grid of 2 to 4 random colours a side, muted towards their grey
    (walls and streets are seldom pure colours), interpolated to ``size``."""
    cells = int(rng.integers(2, 5))
    grid = rng.uniform(0, 255, size=(cells, cells, 3))
    grey = grid.mean(axis=2, keepdims=True)
    grid = grey + rng.uniform(0.2, 0.8) * (grid - grey)
    return Image.fromarray(grid.round().astype(np.uint8), "RGB").resize(size, Image.Resampling.BICUBIC)


@dataclass(frozen=True)
class Augment:
    """Random flip, backdrop replacement, resized crop, blur and colour jitter of a PIL image
    (jitter strengths are the maximum relative change, e.g. brightness 0.2 draws a factor in
    [0.8, 1.2]; ``background`` is a probability, ``blur`` the largest radius in pixels)."""

    flip: bool = True
    crop_scale: tuple[float, float] = (0.7, 1.0)
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.03
    background: float = 0.0
    blur: float = 0.0

    @classmethod
    def from_config(cls, cfg: FinetuneConfig, labels: list[str]) -> Augment:
        preserve = colour_is_target(labels) if cfg.preserve_colour is None else cfg.preserve_colour
        lo, hi = cfg.crop_scale
        if not 0 < lo <= hi <= 1:
            raise VestisError(f"finetune.crop_scale must be two fractions 0 < min <= max <= 1, got {cfg.crop_scale}")
        return cls(cfg.flip, (lo, hi), cfg.brightness, cfg.contrast,
                   0.0 if preserve else cfg.saturation, 0.0 if preserve else cfg.hue, cfg.background, cfg.blur)

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        if self.flip and rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.background > 0 and rng.random() < self.background:
            mask = studio_backdrop(image)
            if mask.any():
                image = Image.composite(colour_field(image.size, rng), image.convert("RGB"),
                                        Image.fromarray(mask.astype(np.uint8) * 255, "L"))
        image = self._crop(image, rng)
        if self.blur > 0:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0, self.blur)))
        for enhancer, strength in ((ImageEnhance.Brightness, self.brightness), (ImageEnhance.Contrast, self.contrast),
                                   (ImageEnhance.Color, self.saturation)):
            if strength > 0:
                image = enhancer(image).enhance(rng.uniform(1 - strength, 1 + strength))
        if self.hue > 0:
            hsv = np.asarray(image.convert("HSV")).copy()
            hsv[..., 0] = (hsv[..., 0].astype(np.int16) + round(rng.uniform(-self.hue, self.hue) * 255)) % 256
            image = Image.fromarray(hsv, "HSV").convert("RGB")
        return image

    def _crop(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        w, h = image.size
        lo, hi = self.crop_scale
        if lo >= 1:
            return image
        area = w * h * rng.uniform(lo, hi)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw = min(w, max(1, round(math.sqrt(area * ratio))))
        ch = min(h, max(1, round(math.sqrt(area / ratio))))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        return image.crop((left, top, left + cw, top + ch))


class ImageDataset(Dataset):
    """Images read from source URIs, optionally augmented, preprocessed to CHW float32 tensors."""

    def __init__(self, sources: list[str], spec: PreprocessSpec, augment: Augment | None = None, seed: int = 0):
        self.sources, self.spec, self.augment, self.seed = sources, spec, augment, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> torch.Tensor:
        from vestis.data import decode_image, read_source

        image = decode_image(read_source(self.sources[i]), source=self.sources[i])
        if self.augment is not None:
            image = self.augment(image, np.random.default_rng([self.seed, self.epoch, i]))
        return torch.from_numpy(self.spec(image))


class BackboneHead(nn.Module):
    """Backbone (pooled, L2-normalised features) followed by the embedding head. With
    ``freeze_bn`` the backbone's BatchNorm layers stay in eval mode while training."""

    def __init__(self, backbone: nn.Module, head: EmbeddingHead, freeze_bn: bool = True):
        super().__init__()
        self.backbone, self.head, self.freeze_bn = backbone, head, freeze_bn

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images)[0])

    def train(self, mode: bool = True) -> BackboneHead:
        super().train(mode)
        if mode and self.freeze_bn:
            for m in self.backbone.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def backbone_name(cfg: RunConfig, items: Items) -> str:
    """The built-in backbone to fine-tune: ``finetune.backbone``, else the encoder of the data."""
    from vestis.encoders.quantize import backbone_of
    from vestis.encoders.torch_models import BUILDERS

    name = cfg.finetune.backbone or items.encoder_name
    name = backbone_of(name) or name  # an 8-bit encoder is fine-tuned as its float32 network
    if name not in BUILDERS:
        raise VestisError(f"cannot fine-tune {name!r}: stage 2 needs a built-in backbone "
                          f"({', '.join(BUILDERS)}); set finetune.backbone")
    return name


def finetune_task(cfg: RunConfig, items: Items, split: np.ndarray) -> TrainingTask:
    """The stage-2 task: backbone + head on images, two learning rates."""
    from vestis.encoders import BUILTIN_PREPROCESSING
    from vestis.encoders.torch_models import BUILDERS

    name = backbone_name(cfg, items)
    groups = items.groups(cfg.data.labels)
    classes, labels = class_labels(groups, split, cfg.train.train_splits)
    backbone = BUILDERS[name]()
    with torch.no_grad():
        in_dim = backbone(torch.zeros(1, 3, 64, 64))[0].shape[1]
    head = EmbeddingHead.from_config(in_dim, cfg.head)
    criterion = HeadLoss(cfg.head, len(classes), head.dim)
    if cfg.finetune.init:
        init = load_checkpoint(Path(cfg.finetune.init))
        if init["classes"] != classes or init["stage"] != 1 or init["backbone"] != name:
            raise VestisError(f"finetune.init {cfg.finetune.init} is not a stage-1 checkpoint of backbone {name} "
                              "with the same classes (same data, labels and split)")
        started = init["config"]["head"]
        if bool(started.get("residual")) != cfg.head.residual or started["dim"] != cfg.head.dim:
            form = "residual" if started.get("residual") else "projection"
            raise VestisError(f"finetune.init {cfg.finetune.init} is a {form} head of dim {started['dim']}: "
                              "set head.residual and head.dim to match")
        # a residual head keeps its centre, the mean of the stage-1 features: the backbone starts there
        head.load_state_dict({k: v for k, v in init["model"].items() if k != "centre" or cfg.head.residual})
        criterion.load_state_dict(init["criterion"])
    model = BackboneHead(backbone, head, cfg.finetune.freeze_bn)
    spec = BUILTIN_PREPROCESSING[name]
    augment = Augment.from_config(cfg.finetune, cfg.data.labels)

    def inputs(rows: np.ndarray, train: bool) -> Dataset:
        return ImageDataset([items.sources[r] for r in rows], spec, augment if train else None, cfg.train.seed)

    groups_lr = [{"params": [*head.parameters(), *criterion.parameters()], "lr": cfg.train.lr},
                 {"params": list(backbone.parameters()), "lr": cfg.finetune.backbone_lr}]
    return TrainingTask(2, model, head, criterion, groups_lr, inputs, items, groups, split, classes, labels, name,
                        regulariser=IdentityAnchor(head, cfg.head.anchor) if cfg.head.anchor else None)
