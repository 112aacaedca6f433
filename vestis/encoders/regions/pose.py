"""The most prominent person's pose in a photo: BlazePose detection (SSD anchors, weighted NMS),
the rotated landmark ROI, then 33 landmarks with visibility and a person mask."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from vestis.encoders.regions.models import (
    LiteModel,
    RegionModelsMissingError,
    missing_message,
    model_dir,
    models_installed,
)

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

# BlazePose landmark indices (left, right).
SHOULDERS, ELBOWS, WRISTS = (11, 12), (13, 14), (15, 16)
HIPS, KNEES, ANKLES, HEELS, TOES = (23, 24), (25, 26), (27, 28), (29, 30), (31, 32)
FEET = ANKLES + HEELS + TOES


@functools.cache
def anchor_centres() -> np.ndarray:
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


def sigmoid(x: np.ndarray) -> np.ndarray:
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
    scores = sigmoid(raw_scores.reshape(-1))
    keep = np.flatnonzero(scores >= DETECTOR_MIN_SCORE)
    if keep.size == 0:
        return []
    anchors = anchor_centres()[keep]
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
class Roi:
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


def roi_from_keypoints(hips: np.ndarray, top: np.ndarray) -> Roi:
    """The landmark ROI from the detector's keypoints 0 (hips' midpoint) and 1, in pixels."""
    dx, dy = top[0] - hips[0], top[1] - hips[1]
    angle = math.pi / 2 - math.atan2(-dy, dx)
    angle = (angle + math.pi) % (2 * math.pi) - math.pi
    return Roi(float(hips[0]), float(hips[1]), 2 * math.hypot(dx, dy) * ROI_SCALE, angle)



@dataclass(frozen=True)
class Pose:
    points: np.ndarray  # 33 x 2, image pixels
    visible: np.ndarray  # 33 visibility scores, 0..1 (0 for points outside the image)
    score: float  # the detector's score times the landmark model's "pose present" score
    roi: Roi
    mask: Image.Image  # the person mask in the ROI crop ("L", LANDMARK_SIZE square)



class PoseEstimator:
    """The pose detector and the landmark model together (thread-safe)."""

    def __init__(self, directory: Path | None = None, *, threads: int | None = None) -> None:
        directory = directory or model_dir()
        if not models_installed(directory):
            raise RegionModelsMissingError(missing_message(directory, f"no models in {directory}"))
        try:
            self._detector = LiteModel(directory / "pose_detection.tflite", threads)
            self._landmarks = LiteModel(directory / "pose_landmark_full.tflite", threads)
        except ImportError:
            raise RegionModelsMissingError(missing_message(directory, "ai-edge-litert is missing")) from None
        except (RuntimeError, ValueError) as e:
            raise RegionModelsMissingError(
                missing_message(directory, f"a model does not load: {e}")) from None

    def __call__(self, image: Image.Image) -> Pose | None:
        """The pose of the most prominent person in an RGB image, or None when there is none."""
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
        visible = sigmoid(values[:, 3]) * inside
        mask_image = Image.fromarray((sigmoid(mask[:, :, 0]) * 255).astype(np.uint8), "L")
        return Pose(points, visible, detected * present, roi, mask_image)
