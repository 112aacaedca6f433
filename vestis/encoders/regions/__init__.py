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

from vestis.encoders.regions.finder import (
    BACKDROP,
    REGION_NAMES,
    Region,
    RegionFinder,
    RegionSettings,
    get_region_finder,
)
from vestis.encoders.regions.models import (
    MEDIAPIPE_VERSION,
    MODEL_FILES,
    RegionModelsMissingError,
    install_models,
    model_dir,
    models_installed,
)
from vestis.encoders.regions.pose import DETECTOR_SIZE, PoseEstimator, decode_detections, roi_from_keypoints

__all__ = [
    "BACKDROP", "DETECTOR_SIZE", "MEDIAPIPE_VERSION", "MODEL_FILES", "REGION_NAMES", "PoseEstimator", "Region",
    "RegionFinder", "RegionModelsMissingError", "RegionSettings", "decode_detections", "get_region_finder",
    "install_models", "model_dir", "models_installed", "roi_from_keypoints",
]
