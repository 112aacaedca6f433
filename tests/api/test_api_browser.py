"""The web page in headless Chromium (Debian's package) driven by Playwright, against a real uvicorn
server on 127.0.0.1: browse the catalogue, upload a photo, see results, click a result, apply a
filter, see an error.
Screenshots go to ``artifacts/browser/`` (git-ignored)."""

from __future__ import annotations

import os
import re
import socket
import threading
from pathlib import Path

import pytest

from tests.conftest import garment_image, jpeg_bytes
from vestis.api.app import create_app

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "browser"
TIMEOUT_MS = 30_000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def server_url(collection_copy, api_encoder):
    import uvicorn

    app = create_app(collection_copy, encoder=api_encoder, workers=2)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(300):
        if server.started:
            break
        thread.join(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(30)
    sock.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _card_ids(page) -> list[str]:
    return page.locator("#results .card").evaluate_all("cards => cards.map(c => c.dataset.id)")


def test_search_click_filter_and_error_in_the_page(server_url, browser, tmp_path):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    photo = tmp_path / "red-shirt.jpg"
    photo.write_bytes(jpeg_bytes(garment_image((200, 30, 30), "shirt", seed=21)))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    external = []
    page.on("request", lambda r: None if r.url.startswith(server_url) or r.url.startswith("blob:")
            else external.append(r.url))

    page.goto(server_url + "/")
    sync_api.expect(page.locator("#collection-info")).to_contain_text("24 items")
    assert page.locator("#filters select").count() == 2  # colour and kind; the unique 'name' is left out
    assert page.locator("#attrs").is_hidden()  # no attribute search in this collection

    # upload a photo: results appear with scores, labels and the query timing
    page.set_input_files("#file", str(photo))
    sync_api.expect(page.locator("#status")).to_contain_text("round trip")
    ids = _card_ids(page)
    assert len(ids) == 24 and ids[0].startswith("red-shirt")
    first = page.locator("#results .card").first
    assert re.fullmatch(r"#1 · 0\.\d{3}", first.locator(".score").inner_text())
    assert first.locator(".labels").inner_text() == "red · shirt"
    assert re.search(r"24 of 24 items · server \d+ ms, embed \d+ ms", page.locator("#status").inner_text())
    page.wait_for_function("[...document.querySelectorAll('#results img')].slice(0, 6)"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(ARTIFACTS / "01-upload.png"), full_page=True)

    # click a result: "more like this" for that item, which leaves it out of its own results
    clicked = ids[3]
    page.locator(f'#results .card[data-id="{clicked}"]').click()
    sync_api.expect(page.locator("#query-caption")).to_have_text(f"more like {clicked}")
    sync_api.expect(page.locator("#status")).to_contain_text("23 of 23 items")
    similar = _card_ids(page)
    assert clicked not in similar and len(similar) == 23
    page.screenshot(path=str(ARTIFACTS / "02-more-like-this.png"), full_page=True)

    # apply a filter: only blue items remain
    page.select_option('select[data-column="colour"]', "blue")
    sync_api.expect(page.locator("#status")).to_contain_text("6 of 6 items")
    labels = page.locator("#results .card .labels").all_inner_texts()
    assert len(labels) == 6 and all(text.startswith("blue ·") for text in labels)
    page.screenshot(path=str(ARTIFACTS / "03-filter.png"), full_page=True)

    # a file that is not an image: a clear error, and the page keeps working
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not a photo")
    page.set_input_files("#file", str(bad))
    sync_api.expect(page.locator("#error")).to_contain_text("not an image")
    assert page.locator("#results .card").count() == 0 and page.locator("#more").is_hidden()
    page.screenshot(path=str(ARTIFACTS / "04-error.png"), full_page=True)
    page.locator("#clear-filters").click()
    page.select_option("#k", "12")
    page.set_input_files("#file", str(photo))
    sync_api.expect(page.locator("#error")).to_be_hidden()
    sync_api.expect(page.locator("#status")).to_contain_text("12 of 24 items")

    # paging: "More results" appends the next page, then disappears when all are shown
    page.locator("#more").click()
    sync_api.expect(page.locator("#status")).to_contain_text("24 of 24 items")
    assert page.locator("#results .card").count() == 24 and page.locator("#more").is_hidden()
    assert _card_ids(page)[:12] == ids[:12]
    assert not external, external
    page.close()


def test_browse_grid_on_load_then_more_like_this_without_a_photo(server_url, browser):
    """A first visitor sees the catalogue at once (paged), can click an item for similar ones, and
    nothing the page requests on load fails."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    failed = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("requestfailed", lambda r: failed.append(f"failed {r.url}"))
    page.goto(server_url + "/", wait_until="networkidle")
    sync_api.expect(page.locator("#status")).to_contain_text("Browsing the catalogue: 24 of 24 items")
    assert len(_card_ids(page)) == 24 and _card_ids(page)[0] == "black-dress-0"
    page.wait_for_function("[...document.querySelectorAll('#results img')].slice(0, 6)"
                           ".every(i => i.complete && i.naturalWidth > 0)")
    page.wait_for_load_state("networkidle")
    # Headless Chromium does not fetch icons; a desktop browser asks for the page's icon or /favicon.ico.
    icon = page.locator('link[rel="icon"]').get_attribute("href")
    assert page.evaluate(f"Promise.all(['{icon}', '/favicon.ico'].map(u => fetch(u).then(r => r.status)))") == [200, 200]
    assert not failed, failed
    assert page.locator("#results .card .score").first.inner_text() == "#1"  # no score without a query
    page.screenshot(path=str(ARTIFACTS / "00-browse.png"), full_page=True)

    # smaller pages: "More results" appends the next page of the catalogue
    page.select_option("#k", "12")
    sync_api.expect(page.locator("#status")).to_contain_text("12 of 24 items")
    page.locator("#more").click()
    sync_api.expect(page.locator("#status")).to_contain_text("24 of 24 items")
    browsed = _card_ids(page)
    assert len(set(browsed)) == 24 and page.locator("#more").is_hidden()

    # click a browsed item: the items most like it, without it
    clicked = "blue-shirt-1"
    page.locator(f'#results .card[data-id="{clicked}"]').click()
    sync_api.expect(page.locator("#query-caption")).to_have_text(f"more like {clicked}")
    sync_api.expect(page.locator("#status")).to_contain_text("12 of 23 items")
    similar = _card_ids(page)
    assert clicked not in similar and similar[0] == "blue-shirt-0"
    assert re.fullmatch(r"#1 · 0\.\d{3}", page.locator("#results .card .score").first.inner_text())
    page.wait_for_function("document.getElementById('query-preview').complete "
                           "&& document.getElementById('query-preview').naturalWidth > 0")
    assert not failed, failed
    page.close()


def test_shop_the_look_draws_the_regions_and_a_row_each(server_url, browser, tmp_path):
    """A photo of a person (the portrait matplotlib ships): its regions boxed on the photo and a row
    of results for each; then a catalogue-like photo shows no look at all."""
    import matplotlib.cbook

    from vestis.encoders import regions

    if not regions.models_installed():
        pytest.skip("the pose models are not installed (make install)")
    portrait = tmp_path / "portrait.jpg"
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        portrait.write_bytes(f.read())
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server_url + "/")
    sync_api.expect(page.locator("#collection-info")).to_contain_text("items")
    page.set_input_files("#file", str(portrait))
    sync_api.expect(page.locator("#status")).to_contain_text("shop the look: top")
    rows = page.locator("#look .look-row").evaluate_all("rows => rows.map(r => r.dataset.region)")
    assert {"top", "person"} <= set(rows) and "shoes" not in rows
    assert page.locator("#look .look-row").first.locator(".card").count() == 6
    boxes = page.locator("#boxes .box")
    assert boxes.count() == len(rows)
    preview = page.locator("#query-preview").bounding_box()
    top = page.locator('#boxes .box[data-region="top"]').bounding_box()
    assert top["width"] > 0 and top["height"] > 0  # drawn inside the photo, below its top edge
    assert preview["x"] - 1 <= top["x"] and top["x"] + top["width"] <= preview["x"] + preview["width"] + 1
    assert preview["y"] < top["y"] < preview["y"] + preview["height"]
    assert len(_card_ids(page)) > 0  # the whole photo's results stay below
    page.screenshot(path=str(ARTIFACTS / "07-shop-the-look.png"), full_page=True)

    photo = tmp_path / "blue-dress.jpg"
    photo.write_bytes(jpeg_bytes(garment_image((30, 50, 200), "dress", seed=8)))
    page.set_input_files("#file", str(photo))
    sync_api.expect(page.locator("#look")).to_be_hidden()  # waits for the new answer
    assert page.locator("#boxes .box").count() == 0
    assert "shop the look" not in page.locator("#status").inner_text()
    page.close()


def test_near_duplicates_view(server_url, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server_url + "/")
    sync_api.expect(page.locator("#collection-info")).to_contain_text("items")
    page.click("#show-duplicates")
    sync_api.expect(page.locator("#status")).to_contain_text("near-duplicates")
    groups = page.locator("#results .dup-group")
    # the shop's two copies of each garment are near-duplicates of each other
    assert groups.count() >= 1 and groups.first.locator(".card").count() >= 2
    first = groups.first.locator(".card").first.get_attribute("data-id")
    groups.first.locator(".card").first.click()  # an item of a group: more like it
    sync_api.expect(page.locator("#query-caption")).to_have_text(f"more like {first}")
    page.close()


def test_page_fits_a_phone_screen(server_url, browser, tmp_path):
    photo = tmp_path / "dress.jpg"
    photo.write_bytes(jpeg_bytes(garment_image((30, 160, 60), "dress", seed=4)))
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                            has_touch=True)
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server_url + "/")
    sync_api.expect(page.locator("#collection-info")).to_contain_text("24 items")
    assert page.locator("#options").get_attribute("open") is None  # results come first on a phone
    page.set_input_files("#file", str(photo))
    sync_api.expect(page.locator("#status")).to_contain_text("round trip")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
    boxes = [page.locator("#results .card").nth(i).bounding_box() for i in range(2)]
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["width"] > 150  # two columns
    page.screenshot(path=str(ARTIFACTS / "05-phone.png"), full_page=False)
    page.close()


def test_api_docs_render_offline(server_url, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(TIMEOUT_MS)
    external = []
    page.on("request", lambda r: None if r.url.startswith(server_url) else external.append(r.url))
    page.goto(server_url + "/docs")
    sync_api.expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    summaries = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/search", "/submit", "/items", "/images/{item_id}"} <= {s.strip() for s in summaries}
    page.screenshot(path=str(ARTIFACTS / "06-docs.png"))
    assert not external, external
    page.close()
