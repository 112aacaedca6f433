"""The page's text box in headless Chromium: search in words, mark results "more / less like this"
and refine, combine the words with a dropped photo. The collection gets a joint text-image model
trained on its own captions first (the server and browser fixtures are the page test's)."""

from __future__ import annotations

import shutil

import pytest

from tests.api.test_api_browser import ARTIFACTS, TIMEOUT_MS, _card_ids, browser, server_url, sync_api  # noqa: F401
from tests.conftest import garment_image, jpeg_bytes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def collection_copy(tmp_path_factory, built_collection):
    """A copy of the shop with a joint model trained on "{colour} {kind}" captions."""
    from vestis.encoders.joint import JointModel
    from vestis.store.collection import Collection
    from vestis.store.vector_builds import build_joint_index
    from vestis.train.config.loading import _build
    from vestis.train.joint import JointRunConfig, train_joint

    dest = tmp_path_factory.mktemp("copy-text") / "shop"
    shutil.copytree(built_collection, dest)
    run = tmp_path_factory.mktemp("joint-run")
    cfg = _build(JointRunConfig, {
        "name": "shop-text", "output": str(run), "data": {"collection": str(dest), "labels": ["colour", "kind"]},
        "text": {"templates": ["{colour} {kind}"]}, "head": {"dim": 32},
        "train": {"epochs": 40, "batch_size": 32, "lr": 0.01, "patience": 0, "progress": False}}, "").validate()
    train_joint(cfg)
    with Collection.open(dest) as coll:
        build_joint_index(coll, JointModel(run))
    return dest


def test_text_box_marks_and_a_photo_with_words(server_url, browser, tmp_path):  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server_url + "/")
    sync_api.expect(page.locator("#collection-info")).to_contain_text("24 items")

    # words alone
    page.fill("#text", "red shirt")
    page.press("#text", "Enter")
    sync_api.expect(page.locator("#status")).to_contain_text("round trip")
    sync_api.expect(page.locator("#status")).to_contain_text('understood: colour=red ("red")')
    ids = _card_ids(page)
    assert len(ids) == 24 and set(ids[:2]) == {"red-shirt-0", "red-shirt-1"}
    page.screenshot(path=str(ARTIFACTS / "10-text.png"), full_page=True)

    # more like this / less like this: the marked items leave the results, the query is refined
    page.locator('#results .card[data-id="red-dress-0"] .mark.plus').click()
    sync_api.expect(page.locator("#refine")).to_contain_text("more like 1")
    sync_api.expect(page.locator("#status")).to_contain_text("23 of")
    page.locator('#results .card[data-id="green-shirt-0"] .mark.minus').click()
    sync_api.expect(page.locator("#refine")).to_contain_text("more like 1 · less like 1")
    sync_api.expect(page.locator("#status")).to_contain_text("22 of")
    refined = _card_ids(page)
    assert not {"red-dress-0", "green-shirt-0"} & set(refined)
    assert refined.index("red-dress-1") < refined.index("green-shirt-1")
    page.screenshot(path=str(ARTIFACTS / "11-refined.png"), full_page=True)
    page.locator("#clear-examples").click()
    sync_api.expect(page.locator("#refine")).to_be_hidden()
    sync_api.expect(page.locator("#status")).to_contain_text("24 of")

    # a photo together with the words: a blue dress "in red" brings red dresses up
    photo = tmp_path / "blue-dress.jpg"
    photo.write_bytes(jpeg_bytes(garment_image((30, 50, 200), "dress", seed=21)))
    page.fill("#text", "red dress")
    page.press("#text", "Enter")
    page.set_input_files("#file", str(photo))
    sync_api.expect(page.locator("#query-caption")).to_have_text("blue-dress.jpg")
    sync_api.expect(page.locator("#status")).to_contain_text("round trip")
    assert set(_card_ids(page)[:2]) == {"red-dress-0", "red-dress-1"}

    # an empty text box goes back to searching by the photo alone
    page.fill("#text", "")
    page.press("#text", "Enter")
    sync_api.expect(page.locator("#status")).to_contain_text("round trip")
    assert _card_ids(page)[0].startswith("blue-dress")
    page.screenshot(path=str(ARTIFACTS / "12-photo-and-words.png"), full_page=True)
    page.close()
