"""Garment regions in a photo of a person ("shop the look"): the top, the bottom, the shoes and the
whole person, each cut out on a near-white backdrop so that it looks like a catalogue photo.

MediaPipe's BlazePose models (Apache-2.0), run with LiteRT: the pose detector finds the person
(an SSD over 2,254 anchors; its two keypoints give the body's centre, size and rotation), the
full landmark model then gives 33 landmarks with their visibility and a person mask inside that
rotated box. The regions are cut between landmarks (shoulders, hips, knees, ankles, feet) and
widened to the mask, which also cuts the person out of the background.

The models come from the ``mediapipe`` 0.10.21 wheel (the last one that bundles them). That
package pins numpy<2 and protobuf<5, so it is not installed: ``make install`` downloads the wheel
as a file and extracts the models into vestis's model cache (``python -m vestis.encoders.regions
WHEEL``); nothing is downloaded at run time.

A studio photo (a person on a plain light background: a catalogue photo of a garment worn by a
model) finds no regions by default, so that catalogue photos are searched whole.
Several people in a photo: the one with the largest body (the most prominent one) is described;
the others are ignored.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
import os
import sys
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vestis.data.images import _to_rgb
from vestis.encoders.onnx_encoder import default_cache_dir
from vestis.errors import VestisError

REGION_NAMES = ("top", "bottom", "shoes", "person")

MEDIAPIPE_VERSION = "0.10.21"
# Model file -> (its path inside the mediapipe wheel, its SHA-256): checked when installed.
MODEL_FILES = {
    "pose_detection.tflite": ("mediapipe/modules/pose_detection/pose_detection.tflite",
                              "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c"),
    "pose_landmark_full.tflite": ("mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
                                  "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"),
}
REVISION = "v1"  # bump when the regions cut from the same landmarks change

BACKDROP = (246, 246, 246)  # near-white, like the light studio backgrounds of catalogue photos
MIN_SIDE = 32  # images with a shorter side find no person (the detector sees 224 x 224)

# Pose detector (mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt): SSD anchors of 5
# layers, strides 8, 16, 32, 32, 32, two anchors of fixed size 1 per cell and layer; 12 values per
# anchor (box x, y, w, h, then 4 keypoints x, y), in pixels of the 224 x 224 letterboxed input.
DETECTOR_SIZE = 224
DETECTOR_STRIDES = (8, 16, 32, 32, 32)
# MediaPipe keeps detections from 0.5; at 0.5 the detector finds a "person" in 9 % of the product
# photos of shoes, bags, watches, eyewear... in fashion-product-images-300 (127 of 1,433); at 0.75
# in 1 % (15), while it still finds 99.8 % of the people in the Clothing Attribute photos.
DETECTOR_MIN_SCORE = 0.75
NMS_MIN_IOU = 0.3
# Landmark ROI (pose_detection_to_roi.pbtxt): centred on keypoint 0 (the hips' midpoint), its side
# twice the distance to keypoint 1 times 1.25, rotated so that keypoint 1 lies straight above.
ROI_SCALE = 1.25
LANDMARK_SIZE = 256
NUM_LANDMARKS = 33
MIN_POSE_SCORE = 0.5  # the landmark model's "pose present" score, as MediaPipe's tracking threshold
MIN_VISIBILITY = 0.5
# A studio photo: more than this fraction of the background (outside the person mask) is light
# (every channel above LIGHT). Measured: 99 % of the Topwear photos of fashion-product-images-300
# in which a person is found (models on white), 1.3 % of the Clothing Attribute street photos.
STUDIO_BACKGROUND = 0.8
LIGHT = 215

# BlazePose landmark indices (left, right).
SHOULDERS, ELBOWS, WRISTS = (11, 12), (13, 14), (15, 16)
HIPS, KNEES, ANKLES, HEELS, TOES = (23, 24), (25, 26), (27, 28), (29, 30), (31, 32)
FEET = ANKLES + HEELS + TOES


class RegionModelsMissingError(VestisError):
    """The pose models (or LiteRT) that find garment regions are not installed."""


@dataclass(frozen=True)
class Region:
    """A region of a photo: ``box`` is (x0, y0, x1, y1) in the original image's pixels; ``image`` is
    the region cut out, the person on a near-white backdrop; ``score`` is a confidence in 0..1."""

    name: str
    box: tuple[int, int, int, int]
    image: Image.Image
    score: float


@dataclass(frozen=True)
class RegionSettings:
    """How regions are cut from the landmarks; lengths are fractions of the torso (the distance
    from the shoulders' midpoint to the hips' midpoint).

    ``above_shoulders``: how far the top reaches above the shoulders (the collar and neckline);
    ``below_hips``: how far the top reaches below the hips (a shirt's hem); ``pad``: the margin
    added around every region; ``cut_out``: paste the person on the backdrop (else keep the
    photo's background); ``hide_head``: blank what lies above the top of the shoulders' line in
    the top region; ``frame``: widen the region's image with backdrop to this width / height
    ratio, centred (catalogue photos are portrait, 3:4; an encoder that crops to a square then
    keeps the sleeves), or None to keep the box's shape; ``studio``: find regions in studio photos
    too (a person on a plain light background: catalogue photos of a garment on a model), which
    by default find nothing, so that they are searched whole.
    """

    above_shoulders: float = 0.3
    below_hips: float = 0.15
    pad: float = 0.08
    cut_out: bool = True
    hide_head: bool = False
    frame: float | None = None
    studio: bool = False

    @property
    def tag(self) -> str:
        return (f"a{self.above_shoulders:g}-b{self.below_hips:g}-p{self.pad:g}"
                f"{'-cut' if self.cut_out else ''}{'-nohead' if self.hide_head else ''}"
                f"{f'-frame{self.frame:g}' if self.frame else ''}{'-studio' if self.studio else ''}")


def model_dir() -> Path:
    """Where the models live: ``<model cache>/mediapipe-0.10.21`` (see ``default_cache_dir``)."""
    return default_cache_dir() / f"mediapipe-{MEDIAPIPE_VERSION}"


def models_installed(directory: Path | None = None) -> bool:
    directory = directory or model_dir()
    return all((directory / name).is_file() for name in MODEL_FILES)


def install_models(wheel: Path, directory: Path | None = None) -> Path:
    """Extract the pose models from a downloaded ``mediapipe`` wheel into ``directory`` (default:
    :func:`model_dir`), checking each file's SHA-256; each is renamed into place, so a reader never
    sees a partial file."""
    directory = directory or model_dir()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as e:
        raise RegionModelsMissingError(f"cannot read the mediapipe wheel {wheel}: {e}") from None
    with archive:
        for name, (member, digest) in MODEL_FILES.items():
            try:
                data = archive.read(member)
            except KeyError:
                raise RegionModelsMissingError(
                    f"{wheel} has no {member}: use mediapipe=={MEDIAPIPE_VERSION}") from None
            if hashlib.sha256(data).hexdigest() != digest:
                raise RegionModelsMissingError(f"{member} in {wheel} is not the file vestis was built for "
                                               f"(SHA-256 differs): use mediapipe=={MEDIAPIPE_VERSION}")
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}-", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, directory / name)
    return directory


def _missing_message(directory: Path, reason: str) -> str:
    return (f"garment regions need MediaPipe's pose models, which are not installed ({reason}). "
            "Install them with `make install`, or: pip download --no-deps "
            f"mediapipe=={MEDIAPIPE_VERSION} -d WHEELS && python -m vestis.encoders.regions "
            f"WHEELS/mediapipe-{MEDIAPIPE_VERSION}-*.whl (they go to {directory})")


@functools.cache
def _anchors() -> np.ndarray:
    """The detector's anchor centres, (2254, 2) in 0..1, in its output order (layers of the same
    stride share the grid: each cell lists all their anchors together)."""
    centres = []
    for stride in sorted(set(DETECTOR_STRIDES)):
        per_cell = 2 * DETECTOR_STRIDES.count(stride)
        cells = math.ceil(DETECTOR_SIZE / stride)
        centre = (np.arange(cells) + 0.5) / cells
        ys, xs = np.meshgrid(centre, centre, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -80.0, 80.0)))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def decode_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray
                      ) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """The detector's outputs (2254 x 12, 2254 x 1) -> people as (score, box x0 y0 x1 y1, keypoints
    4 x 2), in 0..1 of the detector's input, after weighted non-maximum suppression (each kept
    detection is the score-weighted mean of those it overlaps, as MediaPipe's WEIGHTED algorithm)."""
    scores = _sigmoid(raw_scores.reshape(-1))
    keep = np.flatnonzero(scores >= DETECTOR_MIN_SCORE)
    if keep.size == 0:
        return []
    anchors = _anchors()[keep]
    values = raw_boxes.reshape(-1, 12)[keep] / DETECTOR_SIZE
    centre = anchors + values[:, 0:2]
    half = values[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = anchors[:, None, :] + values[:, 4:12].reshape(-1, 4, 2)
    scores = scores[keep]
    people = []
    order = np.argsort(-scores)
    while order.size:
        overlap = _iou(boxes[order[0]], boxes[order]) > NMS_MIN_IOU
        group, order = order[overlap], order[~overlap]
        w = scores[group][:, None]
        people.append((float(scores[group[0]]), (boxes[group] * w).sum(0) / w.sum(),
                       (keypoints[group] * w[:, :, None]).sum(0) / w.sum()))
    return people


@dataclass(frozen=True)
class _Roi:
    """A square, rotated box in image pixels: the landmark model's view of the person."""

    cx: float
    cy: float
    side: float
    angle: float  # radians, counter-clockwise as MediaPipe's

    def affine(self, size: int) -> tuple[float, ...]:
        """PIL's AFFINE data mapping a pixel of the ``size`` x ``size`` crop to the image."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = self.side / size
        return (c * k, -s * k, self.cx - self.side / 2 * (c - s),
                s * k, c * k, self.cy - self.side / 2 * (s + c))

    def inverse(self, x0: float, y0: float, scale: float, size: int) -> tuple[float, ...]:
        """PIL's AFFINE data mapping a pixel of an image crop (origin ``x0, y0``, ``scale`` crop
        pixels per image pixel) to the ``size`` x ``size`` ROI crop."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        k = size / self.side
        dx, dy = x0 - self.cx, y0 - self.cy
        return (c * k / scale, s * k / scale, (c * dx + s * dy) * k + size / 2,
                -s * k / scale, c * k / scale, (-s * dx + c * dy) * k + size / 2)


def roi_from_keypoints(hips: np.ndarray, top: np.ndarray) -> _Roi:
    """The landmark ROI from the detector's keypoints 0 (hips' midpoint) and 1, in pixels."""
    dx, dy = top[0] - hips[0], top[1] - hips[1]
    angle = math.pi / 2 - math.atan2(-dy, dx)
    angle = (angle + math.pi) % (2 * math.pi) - math.pi
    return _Roi(float(hips[0]), float(hips[1]), 2 * math.hypot(dx, dy) * ROI_SCALE, angle)


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send what native code writes to the process's stderr to /dev/null for the block (Python's own
    messages go through sys.stderr, flushed first). Only around a model's creation: it takes
    milliseconds, once per model."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class _Model:
    """One LiteRT interpreter; a lock makes it safe to call from several threads."""

    def __init__(self, path: Path, threads: int | None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        with _native_stderr_silenced():  # LiteRT's C++ prints an INFO line per model on creation
            self._interpreter = Interpreter(model_path=str(path), num_threads=threads or os.cpu_count() or 1)
            self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._outputs = [d["index"] for d in self._interpreter.get_output_details()]
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        with self._lock:
            self._interpreter.set_tensor(self._input, x[None])
            self._interpreter.invoke()
            return [self._interpreter.get_tensor(i)[0].copy() for i in self._outputs]


@dataclass(frozen=True)
class _Pose:
    points: np.ndarray  # 33 x 2, image pixels
    visible: np.ndarray  # 33 visibility scores, 0..1 (0 for points outside the image)
    score: float  # the detector's score times the landmark model's "pose present" score
    roi: _Roi
    mask: Image.Image  # the person mask in the ROI crop ("L", LANDMARK_SIZE square)


class RegionFinder:
    """Finds the garment regions of the most prominent person in a photo (thread-safe)."""

    def __init__(self, directory: Path | None = None, *, threads: int | None = None,
                 settings: RegionSettings | None = None) -> None:
        directory = directory or model_dir()
        if not models_installed(directory):
            raise RegionModelsMissingError(_missing_message(directory, f"no models in {directory}"))
        try:
            self._detector = _Model(directory / "pose_detection.tflite", threads)
            self._landmarks = _Model(directory / "pose_landmark_full.tflite", threads)
        except ImportError:
            raise RegionModelsMissingError(_missing_message(directory, "ai-edge-litert is missing")) from None
        except (RuntimeError, ValueError) as e:
            raise RegionModelsMissingError(
                _missing_message(directory, f"a model does not load: {e}")) from None
        self.settings = settings or RegionSettings()
        self.version = f"mediapipe-{MEDIAPIPE_VERSION}-pose-full/{self.settings.tag}/{REVISION}"

    def find(self, image: Image.Image, names: Sequence[str] = REGION_NAMES) -> list[Region]:
        """The regions ``names`` (in that order) of the most prominent person in ``image``; a region
        that is not visible (the shoes of a person cut off at the waist) is left out. A photo
        without a person gives an empty list, and so does a studio photo (a person on a plain light
        background, as catalogue photos of a garment on a model) unless ``settings.studio``: such
        a photo is meant to be searched whole."""
        unknown = [n for n in names if n not in REGION_NAMES]
        if unknown:
            raise VestisError(f"unknown region {unknown[0]!r}; use one of {', '.join(REGION_NAMES)}")
        try:
            image = _to_rgb(image)
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for odd modes
            raise VestisError(f"cannot convert the image to RGB ({e})") from None
        if min(image.size) < MIN_SIDE:
            return []
        pose = self._pose(image)
        if pose is None or (not self.settings.studio and _studio_photo(image, pose)):
            return []
        regions = []
        for name in names:
            cut = self._box(name, pose, image.size)
            if cut is not None:
                box, score = cut
                regions.append(Region(name, box, self._cut(image, box, pose, name), score))
        return regions

    def _pose(self, image: Image.Image) -> _Pose | None:
        width, height = image.size
        scale = DETECTOR_SIZE / max(width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        letterbox = Image.new("RGB", (DETECTOR_SIZE, DETECTOR_SIZE))
        ox, oy = (DETECTOR_SIZE - w) // 2, (DETECTOR_SIZE - h) // 2
        letterbox.paste(image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=2.0), (ox, oy))
        x = np.asarray(letterbox, dtype=np.float32) / 127.5 - 1.0
        raw_boxes, raw_scores = self._detector(x)
        people = decode_detections(raw_boxes, raw_scores)
        if not people:
            return None
        # The most prominent person: the largest body (the detector's box is the face; the distance
        # between its keypoints 0 and 1 is the radius of the body's circle).
        detected, _, keypoints = max(people, key=lambda p: float(np.linalg.norm(p[2][1] - p[2][0])))
        keypoints = (keypoints * DETECTOR_SIZE - (ox, oy)) / scale
        roi = roi_from_keypoints(keypoints[0], keypoints[1])
        crop = image.transform((LANDMARK_SIZE, LANDMARK_SIZE), Image.Transform.AFFINE,
                               roi.affine(LANDMARK_SIZE),
                               Image.Resampling.BILINEAR)
        landmarks, flag, mask, _heatmap, _world = self._landmarks(np.asarray(crop, dtype=np.float32) / 255.0)
        present = float(flag.reshape(-1)[0])
        if present < MIN_POSE_SCORE:
            return None
        values = landmarks.reshape(-1, 5)[:NUM_LANDMARKS]
        data = roi.affine(LANDMARK_SIZE)
        u, v = values[:, 0], values[:, 1]
        points = np.stack([data[0] * u + data[1] * v + data[2], data[3] * u + data[4] * v + data[5]], axis=1)
        inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
        visible = _sigmoid(values[:, 3]) * inside
        mask_image = Image.fromarray((_sigmoid(mask[:, :, 0]) * 255).astype(np.uint8), "L")
        return _Pose(points, visible, detected * present, roi, mask_image)

    def _box(self, name: str, pose: _Pose, size: tuple[int, int]
             ) -> tuple[tuple[int, int, int, int], float] | None:
        """The region's box in image pixels and its score, or None when it is not visible."""
        s = self.settings
        p, vis = pose.points, pose.visible
        seen = vis >= MIN_VISIBILITY
        mid_shoulder, mid_hip = p[list(SHOULDERS)].mean(0), p[list(HIPS)].mean(0)
        torso = float(np.linalg.norm(mid_shoulder - mid_hip))
        if torso < 4:
            return None
        width, height = size
        if name == "top":
            if not seen[list(SHOULDERS)].any():
                return None
            y0 = p[list(SHOULDERS), 1].min() - s.above_shoulders * torso
            y1 = p[list(HIPS), 1].max() + s.below_hips * torso if seen[list(HIPS)].any() else height
            key = SHOULDERS + HIPS
            xs = [p[i, 0] for i in SHOULDERS + ELBOWS + WRISTS + HIPS if seen[i]]
        elif name == "bottom":
            if not (seen[list(HIPS)].any() and seen[list(KNEES)].any()):
                return None
            y0 = p[list(HIPS), 1].min() - s.below_hips * torso
            y1 = p[list(ANKLES), 1].max() + 0.1 * torso if seen[list(ANKLES)].any() else height
            key = HIPS + KNEES
            xs = [p[i, 0] for i in HIPS + KNEES + ANKLES if seen[i]]
        elif name == "shoes":
            feet = [i for i in FEET if seen[i]]
            if len(feet) < 2:
                return None
            xs = [p[i, 0] for i in feet]
            y0 = min(p[i, 1] for i in feet) - 0.15 * torso
            y1 = max(p[i, 1] for i in feet) + 0.08 * torso
            key = FEET
        else:  # person
            xs = [p[i, 0] for i in range(NUM_LANDMARKS) if seen[i]]
            if len(xs) < 5:
                return None
            y0, y1 = 0, height  # the mask's rows give the person's extent
            key = tuple(range(NUM_LANDMARKS))
        x0, x1 = min(xs), max(xs)
        band = self._mask_extent(pose, size, y0, y1)
        if band is not None:  # the person's extent between y0 and y1: the sleeves and the skirt
            x0, x1 = min(x0, band[0]), max(x1, band[1])
            if name == "person":
                y0, y1 = band[2], band[3]
        elif name == "person":
            ys = [p[i, 1] for i in range(NUM_LANDMARKS) if seen[i]]
            y0, y1 = min(ys), max(ys)
        pad = s.pad * torso
        box = (max(0, int(x0 - pad)), max(0, int(y0 - pad)), min(width, int(math.ceil(x1 + pad))),
               min(height, int(math.ceil(y1 + pad))))
        if box[2] - box[0] < 8 or box[3] - box[1] < 8:
            return None
        score = pose.score * float(np.mean(np.sort(vis[list(key)])[-4:]))
        return box, round(min(max(score, 0.0), 1.0), 4)

    @staticmethod
    def _mask_extent(pose: _Pose, size: tuple[int, int], y0: float, y1: float) -> tuple[float, ...] | None:
        """The bounding box (x0, x1, y0, y1) of the person mask in the rows y0..y1, at a coarse
        scale (the mask is 256 pixels over the ROI), or None when it is empty there."""
        width, height = size
        y0, y1 = max(0.0, y0), min(float(height), y1)
        if y1 - y0 < 2:
            return None
        scale = min(1.0, 128 / max(width, y1 - y0))
        w, h = max(1, round(width * scale)), max(1, round((y1 - y0) * scale))
        band = np.asarray(pose.mask.transform((w, h), Image.Transform.AFFINE,
                                              pose.roi.inverse(0.0, y0, scale, LANDMARK_SIZE),
                                              Image.Resampling.BILINEAR))
        rows, cols = np.nonzero(band >= 128)
        if cols.size == 0:
            return None
        return (cols.min() / scale, (cols.max() + 1) / scale,
                y0 + rows.min() / scale, y0 + (rows.max() + 1) / scale)

    def _cut(self, image: Image.Image, box: tuple[int, int, int, int], pose: _Pose, name: str) -> Image.Image:
        crop = image.crop(box)
        if self.settings.cut_out:
            crop = self._on_backdrop(crop, box, pose, name)
        return _framed(crop, self.settings.frame) if self.settings.frame else crop

    def _on_backdrop(self, crop: Image.Image, box: tuple[int, int, int, int], pose: _Pose,
                     name: str) -> Image.Image:
        mask = pose.mask.transform(crop.size, Image.Transform.AFFINE,
                                   pose.roi.inverse(box[0], box[1], 1.0, LANDMARK_SIZE),
                                   Image.Resampling.BILINEAR)
        if name == "top" and self.settings.hide_head:
            neck = int(pose.points[list(SHOULDERS), 1].min() - 0.1 * np.linalg.norm(
                pose.points[list(SHOULDERS)].mean(0) - pose.points[list(HIPS)].mean(0))) - box[1]
            if neck > 0:
                mask.paste(0, (0, 0, crop.width, min(neck, crop.height)))
        out = Image.new("RGB", crop.size, BACKDROP)
        out.paste(crop, mask=mask)
        return out


def _studio_photo(image: Image.Image, pose: _Pose) -> bool:
    """Whether the person stands on a plain light background (judged at most 128 pixels wide)."""
    scale = min(1.0, 128 / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    person = np.asarray(pose.mask.transform(size, Image.Transform.AFFINE,
                                            pose.roi.inverse(0.0, 0.0, scale, LANDMARK_SIZE),
                                            Image.Resampling.BILINEAR)) >= 64
    background = ~person
    if not background.any():
        return False
    light = np.asarray(image.resize(size, Image.Resampling.BILINEAR)).min(axis=2) > LIGHT
    return float(light[background].mean()) > STUDIO_BACKGROUND


def _framed(image: Image.Image, ratio: float) -> Image.Image:
    """``image`` centred on a backdrop of width / height ``ratio`` (only ever widened or heightened)."""
    width, height = image.size
    size = (max(width, round(height * ratio)), max(height, round(width / ratio)))
    if size == image.size:
        return image
    out = Image.new("RGB", size, BACKDROP)
    out.paste(image, ((size[0] - width) // 2, (size[1] - height) // 2))
    return out


@functools.cache
def get_region_finder(threads: int | None = None) -> RegionFinder:
    """The shared :class:`RegionFinder` with the default settings, one per ``threads``."""
    return RegionFinder(threads=threads)


def main(argv: Sequence[str]) -> int:
    """``python -m vestis.encoders.regions [WHEEL]``: install the models from a downloaded mediapipe
    wheel; without one, exit 0 when they are installed, 1 when not."""
    if not argv:
        return 0 if models_installed() else 1
    try:
        print(f"pose models installed in {install_models(Path(argv[0]))}")
    except VestisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
