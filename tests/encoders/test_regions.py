"""Garment regions: the pose decoding on known values, the region finder on a real portrait (the
photo of Grace Hopper that matplotlib ships), on bad input, and on the shared datasets' photos of
people and catalogue photos."""

from __future__ import annotations

import math
import threading
import zipfile

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

from vestis.data import open_catalogue
from vestis.data.images import decode_image
from vestis.encoders import regions
from vestis.encoders.regions import (
    BACKDROP,
    DETECTOR_SIZE,
    MODEL_FILES,
    REGION_NAMES,
    Region,
    RegionFinder,
    RegionModelsMissingError,
    RegionSettings,
    decode_detections,
    install_models,
    roi_from_keypoints,
)
from vestis.encoders.regions.pose import anchor_centres
from vestis.errors import VestisError


@pytest.fixture(scope="module")
def finder() -> RegionFinder:
    """The shared finder (one thread); skipped only when `make install` has not put the models in
    place."""
    if not regions.models_installed():
        pytest.skip(f"the pose models are not installed in {regions.model_dir()} (run `make install`)")
    return regions.get_region_finder(1)


@pytest.fixture(scope="module")
def portrait() -> Image.Image:
    """A head-and-shoulders portrait: a person cut off above the waist."""
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return decode_image(f.read())


# -- the decoding, without the models -----------------------------------------------------------

def test_anchors_match_the_detector_output():
    anchors = anchor_centres()
    assert anchors.shape == (2254, 2)
    # The first grid (stride 8, 28 x 28 cells, 2 anchors each), row by row; the last cell of the
    # last grid (stride 32, 7 x 7 cells, 6 anchors each) is the bottom-right one.
    assert np.allclose(anchors[0], anchors[1]) and np.allclose(anchors[0], [0.5 / 28, 0.5 / 28])
    assert np.allclose(anchors[2], [1.5 / 28, 0.5 / 28]) and np.allclose(anchors[56], [0.5 / 28, 1.5 / 28])
    assert np.allclose(anchors[-6:], [6.5 / 7, 6.5 / 7])


def test_decode_detections_merges_overlapping_boxes_and_keeps_others_apart():
    boxes = np.zeros((2254, 12), np.float32)
    scores = np.full((2254, 1), -10.0, np.float32)
    anchors = anchor_centres()
    # Two anchors next to each other see the same person (a box 56 px wide, 112 px tall); a third,
    # far away, sees another; every other anchor sees nothing.
    for index, score in ((28 * 14 * 2 + 28, 3.0), (28 * 14 * 2 + 30, 1.5), (20, 2.0)):
        boxes[index, 2:4] = (56, 112)
        boxes[index, 4:6] = (0, 30)  # keypoint 0: 30 px below the anchor
        scores[index] = score
    people = decode_detections(boxes, scores)
    assert len(people) == 2
    (score, box, keypoints), (other_score, other_box, _) = people
    assert score == pytest.approx(1 / (1 + math.exp(-3.0)))
    w1, w2 = 1 / (1 + math.exp(-3.0)), 1 / (1 + math.exp(-1.5))
    centre = (anchors[28 * 14 * 2 + 28] * w1 + anchors[28 * 14 * 2 + 30] * w2) / (w1 + w2)
    assert np.allclose(box, [*(centre - (28 / 224, 56 / 224)), *(centre + (28 / 224, 56 / 224))], atol=1e-6)
    assert np.allclose(keypoints[0], centre + (0, 30 / DETECTOR_SIZE), atol=1e-6)
    assert other_score == pytest.approx(1 / (1 + math.exp(-2.0)))
    assert np.allclose((other_box[:2] + other_box[2:]) / 2, anchors[20])
    assert decode_detections(boxes, np.full((2254, 1), -10.0, np.float32)) == []


def test_roi_turns_the_body_upright_and_its_inverse_maps_back():
    upright = roi_from_keypoints(np.array([100.0, 200.0]), np.array([100.0, 120.0]))
    assert (upright.cx, upright.cy, upright.angle) == (100.0, 200.0, 0.0)
    assert upright.side == pytest.approx(2 * 80 * 1.25)
    lying = roi_from_keypoints(np.array([100.0, 200.0]), np.array([180.0, 200.0]))
    assert lying.angle == pytest.approx(math.pi / 2)
    # The top centre of the crop is the point keypoint 1 gives (1.25 x farther away), whatever the
    # rotation; and the inverse maps an image point back to the crop pixel it came from.
    for roi, top in ((upright, (100, 100)), (lying, (200, 200))):
        a = roi.affine(256)
        assert np.allclose((a[0] * 128 + a[2], a[3] * 128 + a[5]), top)
        b = roi.inverse(37.0, 11.0, 2.0, 256)
        u, v = 77.0, 201.0  # a crop pixel
        x, y = a[0] * u + a[1] * v + a[2], a[3] * u + a[4] * v + a[5]
        i, j = (x - 37.0) * 2.0, (y - 11.0) * 2.0  # that image point in a crop at (37, 11), scale 2
        assert np.allclose((b[0] * i + b[1] * j + b[2], b[3] * i + b[4] * j + b[5]), (u, v))


def test_missing_models_name_the_install_command(tmp_path):
    with pytest.raises(RegionModelsMissingError, match="make install"):
        RegionFinder(tmp_path)
    assert issubclass(RegionModelsMissingError, VestisError)


def test_install_checks_the_wheel(tmp_path):
    with pytest.raises(RegionModelsMissingError, match="cannot read"):
        install_models(tmp_path / "missing.whl", tmp_path / "models")
    wheel = tmp_path / "mediapipe-0.10.20-cp311-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for member, _ in MODEL_FILES.values():
            z.writestr(member, b"not the model")
    with pytest.raises(RegionModelsMissingError, match="SHA-256"):
        install_models(wheel, tmp_path / "models")
    assert not any((tmp_path / "models").glob("*.tflite"))


# -- the models on real and bad images ----------------------------------------------------------

def test_portrait_gives_a_top_and_the_person_but_no_bottom_or_shoes(finder, portrait):
    found = finder.find(portrait)
    assert [r.name for r in found] == ["top", "person"]
    top, person = found
    width, height = portrait.size
    x0, y0, x1, y1 = top.box
    # The jacket fills the lower half of the portrait; the face is above the top region's middle.
    assert 0 <= x0 < 0.15 * width and x1 > 0.85 * width and 0.3 * height < y0 < 0.5 * height and y1 == height
    assert person.box[3] - person.box[1] > 0.9 * height and person.score > 0.7
    for region in found:
        assert isinstance(region, Region) and region.image.mode == "RGB"
        assert region.image.size == (region.box[2] - region.box[0], region.box[3] - region.box[1])
        assert 0 < region.score <= 1
    # The flag behind her is cut away: the top-left corner of the person is the backdrop.
    corner = np.asarray(person.image)[:40, :40].reshape(-1, 3)
    assert np.abs(corner.astype(int) - BACKDROP).max() < 10
    assert finder.version.startswith("mediapipe-0.10.21")


def test_framed_regions_are_portrait_with_the_cut_centred(finder, portrait):
    framed = RegionFinder(settings=RegionSettings(frame=0.75)).find(portrait, ("top",))[0]
    plain = finder.find(portrait, ("top",))[0]
    assert framed.box == plain.box
    (width, height), (w, h) = framed.image.size, plain.image.size
    assert width / height == pytest.approx(0.75, abs=0.01) and (width == w or height == h)
    # The region in the middle, the backdrop around it (the portrait's top is wider than 3:4).
    left, top = (width - w) // 2, (height - h) // 2
    assert top > 0
    pixels = np.asarray(framed.image).astype(int)
    assert np.array_equal(pixels[top:top + h, left:left + w], np.asarray(plain.image))
    assert np.abs(pixels[:top] - BACKDROP).max() == 0 and np.abs(pixels[top + h:] - BACKDROP).max() == 0


def test_studio_photo_finds_nothing_unless_asked(finder, portrait):
    # The portrait cut out on the near-white backdrop: a catalogue photo of a garment on a model.
    studio = finder.find(portrait, ("person",))[0].image
    assert finder.find(studio) == []
    found = RegionFinder(settings=RegionSettings(studio=True)).find(studio)
    assert [r.name for r in found] == ["top", "person"]


def test_names_selects_regions_in_order(finder, portrait):
    assert [r.name for r in finder.find(portrait, ("person", "shoes", "top"))] == ["person", "top"]
    with pytest.raises(VestisError, match="unknown region 'hat'"):
        finder.find(portrait, ("hat",))


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA"])
def test_other_image_modes_find_the_same_person(finder, portrait, mode):
    image = portrait.convert(mode)
    if mode == "RGBA":  # a transparent border: composited on white
        alpha = Image.new("L", portrait.size, 0)
        alpha.paste(255, (20, 20, portrait.width - 20, portrait.height))
        image.putalpha(alpha)
    found = {r.name: r for r in finder.find(image)}
    expected = {r.name: r for r in finder.find(portrait)}
    assert set(found) == set(expected)
    assert np.abs(np.subtract(found["top"].box, expected["top"].box)).max() < 0.1 * portrait.height


@pytest.mark.parametrize("size", [(1, 1), (20, 20), (20_000, 300), (300, 20_000)])
def test_tiny_and_extreme_images_find_nothing(finder, size):
    assert finder.find(Image.new("RGB", size, (120, 90, 60))) == []


def test_photo_without_a_person_finds_nothing(finder, make_garment):
    for shape in ("shirt", "trousers", "dress"):
        assert finder.find(make_garment((200, 30, 40), shape, size=(300, 400))) == []


def test_several_people_describe_the_largest(finder, portrait):
    width, height = portrait.size
    group = Image.new("RGB", (width * 3 // 2, height), (180, 180, 180))
    group.paste(portrait.resize((width // 2, height // 2)), (0, height // 2))
    group.paste(portrait, (width // 2, 0))
    top = finder.find(group, ("top",))[0]
    alone = finder.find(portrait, ("top",))[0]
    shifted = np.add(alone.box, (width // 2, 0, width // 2, 0))
    assert np.abs(np.subtract(top.box, shifted)).max() < 0.1 * width


def test_concurrent_calls_give_the_same_regions(finder, portrait):
    expected = [(r.name, r.box) for r in finder.find(portrait)]
    results, errors = [], []

    def work():
        try:
            for _ in range(5):
                results.append([(r.name, r.box) for r in finder.find(portrait)])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 10 and all(r == expected for r in results)


def test_get_region_finder_is_cached_per_thread_count(finder):
    assert regions.get_region_finder(1) is finder
    assert regions.get_region_finder(2) is not finder


# -- the shared datasets --------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.shared
def test_top_region_lies_on_the_garment_in_street_photos(finder, clothing_attributes_zip):
    items = [i for i in open_catalogue(clothing_attributes_zip) if "category" in i.metadata][::40]
    assert len(items) >= 25
    good = 0
    for item in items:
        image = decode_image(item.read())
        width, height = image.size
        found = {r.name: r for r in finder.find(image)}
        assert set(found) <= set(REGION_NAMES)
        if "top" not in found:
            continue
        top = found["top"]
        x0, y0, x1, y1 = top.box
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        good += 0.25 < cx < 0.75 and 0.2 < cy < 0.65 and top.score > 0.8 and (y1 - y0) < 0.9 * height
    assert good >= 0.9 * len(items)


# Product photos of things worn by nobody in the picture (fashion-product-images-300 subcategories).
NO_PERSON = {"Shoes", "Sandal", "Flip Flops", "Watches", "Bags", "Jewellery", "Eyewear", "Fragrance", "Belts",
             "Wallets", "Socks", "Ties", "Headwear", "Cufflinks", "Nails", "Lips", "Makeup"}


@pytest.mark.slow
@pytest.mark.shared
def test_catalogue_photos_find_no_regions(finder, fpi300):
    items = list(open_catalogue(fpi300))
    # Whatever the product: a third of these photos show a model, on white (studio photos).
    sample = items[::8]
    assert sum(bool(finder.find(decode_image(i.read()))) for i in sample) <= 0.02 * len(sample)
    # Without the studio rule, the detector still finds no person in photos of products alone.
    alone = [i for i in items if i.metadata.get("subCategory") in NO_PERSON][::4]
    assert len(alone) > 300
    detector = RegionFinder(settings=RegionSettings(studio=True))
    assert sum(bool(detector.find(decode_image(i.read()), ("person",))) for i in alone) <= 0.02 * len(alone)
