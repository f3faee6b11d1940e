"""The browse pages in headless Chromium (Debian's `chromium`, driven by Playwright)."""

from __future__ import annotations

import base64
import dataclasses
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from browse_support import HOSTILE, WordEmbedder, build_library, png_bytes

from browse import create_app

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"
PAGE_SIZE = 12
TOTAL = 42
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's Chromium at /usr/bin/chromium: apt-get install -y chromium",
)


@pytest.fixture(scope="module")
def server(pg_url, tmp_path_factory):
    """The app on a seeded library, served by a real HTTP server on a free loopback port."""
    from werkzeug.serving import make_server

    settings = build_library(pg_url, tmp_path_factory.mktemp("pages"))
    settings = dataclasses.replace(settings, web=dataclasses.replace(settings.web, page_size=PAGE_SIZE))
    app = create_app(settings, embedder=WordEmbedder())
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(timeout=5)
    app.extensions["image_browser"].close()


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )
        yield browser
        browser.close()


class Watched:
    """A page plus what it did that a test may want to refuse: dialogs, CSP errors, requests."""

    def __init__(self, page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.console_errors: list[str] = []
        self.requests: list[str] = []
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))


@pytest.fixture(params=["desktop", "phone"])
def watched(request, browser):
    viewport = DESKTOP if request.param == "desktop" else PHONE
    context = browser.new_context(viewport=viewport, is_mobile=request.param == "phone",
                                  has_touch=request.param == "phone")
    page = Watched(context.new_page())
    page.kind = request.param
    yield page
    context.close()
    assert page.dialogs == [], "a script ran that should not have"
    assert page.console_errors == [], page.console_errors  # CSP violations show up here


def shot(watched: Watched, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    watched.page.screenshot(path=str(SCREENSHOTS / f"{name}-{watched.kind}.png"), full_page=False)


def box_geometry(page) -> list[dict]:
    return page.eval_on_selector_all(
        "#grid > .box",
        """boxes => boxes.map(b => { const r = b.getBoundingClientRect();
            return {id: b.dataset.id, w: +b.dataset.w, h: +b.dataset.h, width: r.width,
                    height: r.height, left: r.left, right: r.right, top: r.top}; })""",
    )


def test_grid_boxes_take_their_images_aspect_ratio(server, watched):
    page = watched.page
    page.goto(server + "/")
    page.wait_for_selector("#grid.justified")
    page.wait_for_load_state("networkidle")
    shot(watched, "home")
    boxes = box_geometry(page)
    assert len(boxes) >= PAGE_SIZE
    for box in boxes:
        assert box["width"] / box["height"] == pytest.approx(box["w"] / box["h"], rel=0.01), box
    grid_right = page.eval_on_selector("#grid", "g => g.getBoundingClientRect().right")
    rows: dict[int, list[dict]] = {}
    for box in boxes:
        rows.setdefault(round(box["top"]), []).append(box)
    full_rows = list(rows.values())[:-1]
    assert full_rows, "expected at least one full row"
    for row in full_rows:  # justified: every full row reaches the right edge
        assert max(b["right"] for b in row) == pytest.approx(grid_right, abs=2)
    loaded = page.eval_on_selector_all("#grid img", "imgs => imgs.filter(i => i.complete && i.naturalWidth > 0).length")
    assert loaded >= 1


def test_infinite_scroll_loads_every_page_without_originals(server, watched):
    page = watched.page
    page.goto(server + "/")
    page.wait_for_selector("#grid.justified")
    for _ in range(20):
        if page.query_selector("#end"):
            break
        count = page.eval_on_selector_all("#grid > .box", "b => b.length")
        page.mouse.wheel(0, 5000)
        page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
        page.wait_for_function(
            "n => document.querySelectorAll('#grid > .box').length > n || !!document.getElementById('end')",
            arg=count, timeout=5000,
        )
    page.wait_for_selector("#end")
    ids = page.eval_on_selector_all("#grid > .box", "b => b.map(x => x.dataset.id)")
    assert len(ids) == TOTAL and len(set(ids)) == TOTAL
    months = page.eval_on_selector_all("#grid > .month", "h => h.map(x => x.dataset.month)")
    assert months == sorted(set(months), reverse=True)  # newest first, none repeated across pages
    assert months[-3:] == ["2019-08", "2019-07", "2018-04"]
    for box in box_geometry(page):
        assert box["width"] / box["height"] == pytest.approx(box["w"] / box["h"], rel=0.01)
    shot(watched, "scrolled")
    assert not [u for u in watched.requests if "/media/original/" in u], "the grid fetched originals"
    assert any("cursor=" in u for u in watched.requests)


def next_page_requests(requests: list[str]) -> list[str]:
    return [url for url in requests if "cursor=" in url]


def test_no_next_page_is_fetched_before_the_reader_scrolls(server, browser):
    # A window just shorter than the first page, with the "Older images" link inside the
    # observer's 200 px margin: the case that fetched a second page at load (issue 13, 14).
    probe = browser.new_context(viewport={"width": 1280, "height": 2000})
    page = probe.new_page()
    page.route("**/*cursor=*", lambda route: route.abort())  # keep the first page's layout
    page.goto(server + "/")
    page.wait_for_selector("#grid.justified")
    link_top = page.eval_on_selector("#more", "a => a.getBoundingClientRect().top")
    probe.close()
    context = browser.new_context(viewport={"width": 1280, "height": int(link_top) - 100})
    try:
        watched = Watched(context.new_page())
        page = watched.page
        page.goto(server + "/")
        page.wait_for_selector("#grid.justified")
        page.wait_for_load_state("networkidle")
        assert page.evaluate("document.documentElement.scrollHeight > innerHeight")
        assert next_page_requests(watched.requests) == []
        with page.expect_request(lambda r: "cursor=" in r.url, timeout=10_000):
            page.mouse.wheel(0, 300)
        assert watched.console_errors == []
    finally:
        context.close()


def test_a_first_page_that_leaves_the_window_unfilled_fetches_the_next(server, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 3000})
    try:
        page = context.new_page()
        with page.expect_request(lambda r: "cursor=" in r.url, timeout=10_000):
            page.goto(server + "/")
    finally:
        context.close()


def test_text_search_puts_the_expected_image_first_and_lives_in_the_url(server, watched):
    page = watched.page
    page.goto(server + "/")
    page.fill(".search input", "red bicycle in the snow")
    page.press(".search input", "Enter")
    page.wait_for_selector("#grid > .box")
    assert parse_qs(urlsplit(page.url).query)["q"] == ["red bicycle in the snow"]
    first = page.query_selector("#grid > .box")
    assert first.query_selector(".caption").text_content() == "red-bicycle-snow.jpg"
    assert first.query_selector(".sim").text_content() == "1.000"
    shot(watched, "search")
    page.go_back()
    page.wait_for_selector("#more")
    assert "q=" not in page.url
    page.go_forward()
    page.wait_for_selector(".sim")
    assert page.input_value(".search input") == "red bicycle in the snow"


def test_image_page_shows_details_similar_images_and_keyboard_navigation(server, watched):
    page = watched.page
    page.goto(server + "/?q=red+bicycle+snow")
    page.click("#grid > .box >> nth=0")
    page.wait_for_selector("#filename")
    assert page.text_content("#filename") == "red-bicycle-snow.jpg"
    details = page.text_content(".details")
    assert "900 × 600 px" in details and "JPEG" in details
    page.wait_for_load_state("networkidle")
    first_similar = page.query_selector("#grid > .box .caption").text_content()
    assert first_similar == "red-car.jpg"
    shot(watched, "image")
    here = page.url
    older = page.get_attribute("#older", "href")
    page.keyboard.press("ArrowRight")
    page.wait_for_url(re.compile(re.escape(older) + "$"))
    page.keyboard.press("ArrowLeft")
    page.wait_for_url(here)
    page.keyboard.press("Escape")
    page.wait_for_url(server + "/")


def test_search_by_upload_and_by_drop(server, watched):
    page = watched.page
    page.goto(server + "/search/image")
    page.set_input_files("#file", files=[{"name": "query.png", "mimeType": "image/png",
                                          "buffer": png_bytes((20, 40, 230))}])
    page.wait_for_selector("#grid > .box")
    assert page.query_selector("#grid > .box .caption").text_content() == "blue-sea.jpg"
    shot(watched, "upload")
    page.goto(server + "/search/image")
    green = base64.b64encode(png_bytes((30, 200, 40))).decode()
    page.evaluate(
        """b64 => { const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer(); dt.items.add(new File([bytes], 'drop.png', {type: 'image/png'}));
            document.getElementById('dropzone').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true})); }""",
        green,
    )
    page.wait_for_selector("#grid > .box")
    assert page.query_selector("#grid > .box .caption").text_content() == "green-forest.png"


def test_hostile_file_name_shows_as_text(server, watched):
    page = watched.page
    page.goto(server + "/?limit=60")
    captions = page.eval_on_selector_all("#grid .caption", "c => c.map(x => x.textContent)")
    assert HOSTILE in captions
    assert page.query_selector("img[src='x']") is None
    page.click(f"#grid > .box:has(.caption > bdi:text-is('{HOSTILE}'))")
    page.wait_for_selector("#filename")
    assert page.text_content("#filename") == HOSTILE
    assert HOSTILE in page.title()
    assert page.query_selector("img[src='x']") is None
    shot(watched, "hostile")


def captions(page) -> list[str]:
    return page.eval_on_selector_all("#grid > .box .caption", "c => c.map(x => x.textContent)")


def query_of(page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query, keep_blank_values=True)


def test_filters_live_in_the_url_as_removable_chips_and_the_back_button_works(server, watched):
    page = watched.page
    page.goto(server + "/")
    page.click(".filters summary")
    page.select_option("#camera", "FUJIFILM X-T3")
    page.click("#filter-form button")
    page.wait_for_selector("#chips")
    assert query_of(page) == {"camera": ["FUJIFILM X-T3"]}  # empty fields left out
    assert sorted(captions(page)) == ["Italy/Rome/fontana.jpg", "Italy/Rome/vespa.jpg"]
    page.select_option("#has-location", "true")
    page.click("#filter-form button")
    page.wait_for_selector("#clear-filters")
    assert captions(page) == ["Italy/Rome/vespa.jpg"]
    shot(watched, "filters")
    page.click("a.chip[data-filter='camera']")  # remove one filter, keep the other
    page.wait_for_url(re.compile(r"has_location=true$"))
    assert sorted(captions(page)) == ["Italy/Rome/vespa.jpg", "Italy/beach.jpg", "Japan/kyoto.jpg"]
    page.go_back()
    page.wait_for_selector("#clear-filters")
    assert query_of(page) == {"camera": ["FUJIFILM X-T3"], "has_location": ["true"]}
    assert captions(page) == ["Italy/Rome/vespa.jpg"]
    page.go_back()
    page.wait_for_function("() => !document.getElementById('clear-filters')")
    assert query_of(page) == {"camera": ["FUJIFILM X-T3"]} and len(captions(page)) == 2
    page.fill(".search input", "red bicycle snow")  # a search keeps the filters
    page.press(".search input", "Enter")
    page.wait_for_selector(".sim")
    assert query_of(page)["camera"] == ["FUJIFILM X-T3"]
    assert sorted(captions(page)) == ["Italy/Rome/fontana.jpg", "Italy/Rome/vespa.jpg"]
    page.click("a.chip[data-filter='camera']")
    page.wait_for_selector(".sim")
    assert captions(page)[0] == "red-bicycle-snow.jpg"


def test_folders_are_albums_and_the_image_page_says_when_where_and_with_what(server, watched):
    page = watched.page
    page.goto(server + "/folders")
    albums = page.eval_on_selector_all(".album", "a => a.map(x => [x.dataset.folder, x.querySelector('.album-count').textContent])")
    assert albums == [["Italy", "3 photos"], ["Italy2", "1 photo"], ["Japan", "1 photo"]]
    page.wait_for_function("() => [...document.querySelectorAll('.album img')].every(i => i.complete && i.naturalWidth > 0)")
    shot(watched, "folders")
    page.click(".album[data-folder='Italy']")
    page.wait_for_selector("#albums")
    assert query_of(page) == {"folder": ["Italy"]} and len(captions(page)) == 3
    page.click(".album[data-folder='Italy/Rome']")
    page.wait_for_url(re.compile(r"folder=Italy(/|%2F)Rome$"))
    assert sorted(captions(page)) == ["Italy/Rome/fontana.jpg", "Italy/Rome/vespa.jpg"]
    page.click("#grid > .box:has(.caption > bdi:text-is('Italy/Rome/vespa.jpg'))")
    page.wait_for_selector("#filename")
    assert page.text_content("#crumbs").split() == ["All", "folders", "›", "Italy", "›", "Rome", "›", "vespa.jpg"]
    assert page.text_content("#taken") == "2019-07-14 10:00:00 (UTC+02:00)"
    assert page.text_content("#camera-name") == "FUJIFILM X-T3"
    assert page.text_content("#place").startswith("41.89021° N, 12.49223° E")
    link = urlsplit(page.get_attribute("#map", "href"))
    assert (link.scheme, link.netloc) == ("https", "www.openstreetmap.org")
    at = parse_qs(link.query)
    assert (float(at["mlat"][0]), float(at["mlon"][0])) == (pytest.approx(41.89021, abs=2e-6),
                                                            pytest.approx(12.49223, abs=2e-6))
    shot(watched, "image-metadata")
    arrows = page.eval_on_selector_all("#newer, #older", "a => a.map(x => [x.id, x.href])")
    assert len(arrows) == 1  # two photos in the album: one arrow, to the other
    (arrow, other), = arrows
    assert parse_qs(urlsplit(other).query) == {"folder": ["Italy/Rome"]}  # it stays in the album
    page.keyboard.press("ArrowLeft" if arrow == "newer" else "ArrowRight")
    page.wait_for_url(re.compile(re.escape(other) + "$"))
    assert page.text_content("#filename") == "Italy/Rome/fontana.jpg"
    page.keyboard.press("Escape")
    page.wait_for_url(re.compile(r"/\?folder=Italy(/|%2F)Rome$"))
    page.click("#crumbs a:has(bdi:text-is('Italy'))")
    page.wait_for_url(re.compile(r"/\?folder=Italy$"))


# --- accessibility: axe-core in the same Chromium ------------------------------------------

SERIOUS = {"moderate", "serious", "critical"}


def axe_violations(page) -> list[str]:
    """axe-core's violations of moderate impact or worse, one line each."""
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page)
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in results.response["violations"] if v["impact"] in SERIOUS]


@pytest.mark.parametrize("path", ["/", "/?q=red+bicycle", "/image/FIRST", "/search/image",
                                  "/status", "/image/999999", "/folders", "/?folder=Italy",
                                  "/?camera=FUJIFILM+X-T3&has_location=true&taken_after=2019-01-01",
                                  "/?q=red&folder=Italy", "/?camera=nobody"])
def test_pages_pass_axe_core(server, watched, path):
    page = watched.page
    if "FIRST" in path:
        page.goto(server + "/")
        path = page.get_attribute("#grid > .box >> nth=0", "href")
    page.goto(server + path)
    page.wait_for_load_state("networkidle")
    assert axe_violations(page) == []
    if path == "/image/999999":  # the 404 itself is logged by the browser, as it should be
        watched.console_errors[:] = [e for e in watched.console_errors if "404" not in e]


# --- the live page: photos copied into the folder appear, search turns on by itself ----------


@pytest.fixture
def live_site(pg_url, tmp_path):
    """The app with search off and a live library (sync and watch only) on its own database."""
    from loader.live import LiveLibrary
    from shared.progress import Board
    from shared.settings import LiveSettings, Settings
    from shared.store import Schema, connect
    from werkzeug.serving import make_server

    with connect(pg_url) as admin:
        admin.execute("DROP DATABASE IF EXISTS live_pages WITH (FORCE)")
        admin.execute("CREATE DATABASE live_pages")
    url = pg_url.replace("/postgres?", "/live_pages?")
    with connect(url) as conn:
        Schema(conn).ensure(768)
    (tmp_path / "images").mkdir()
    settings = Settings(images_dir=tmp_path / "images", data_dir=tmp_path / "data",
                        database_url=url, embedder="none",
                        live=LiveSettings(debounce_s=0.1, settle_s=0.2, progress_every_s=60))
    settings = dataclasses.replace(settings, web=dataclasses.replace(settings.web, live_poll_s=0.3))
    board, stop = Board(), threading.Event()
    app = create_app(settings, embedder=None, board=board)
    app.extensions["image_browser"].search.set_off("the search model is downloading (3%)",
                                                   "the search model is downloading (3%)")
    live = LiveLibrary(settings, url, stop, board, table_dimensions=768, jobs=1)
    live.start()
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", settings.images_dir, app
    httpd.shutdown()
    thread.join(timeout=5)
    live.join(timeout=30)
    app.extensions["image_browser"].close()


def test_photos_copied_into_the_folder_appear_on_the_open_page(live_site, watched, tmp_path):
    url, images, _app = live_site
    page = watched.page
    page.goto(url + "/")
    page.wait_for_selector("#empty")
    (tmp_path / "first.png").write_bytes(png_bytes((200, 30, 30), (300, 200)))
    shutil.copy(tmp_path / "first.png", images / "first.png")
    page.wait_for_selector("#grid > .box .caption:has-text('first.png')", timeout=15000)
    assert page.is_hidden("#empty")
    shutil.copy(tmp_path / "first.png", images / "second.png")
    page.wait_for_function(
        "() => document.querySelector('#grid > .box .caption')?.textContent === 'second.png'",
        timeout=15000)  # newest first
    page.wait_for_selector("#grid.justified")
    shot(watched, "live")
    (images / "first.png").unlink()
    page.wait_for_selector("#grid > .box .caption:has-text('first.png')", state="detached",
                           timeout=15000)
    assert page.eval_on_selector_all("#grid > .box", "b => b.length") == 1


def test_the_search_box_turns_on_without_a_reload(live_site, watched):
    url, _images, app = live_site
    page = watched.page
    page.goto(url + "/")
    assert page.is_disabled(".search input") and page.is_disabled(".search button")
    assert page.text_content("#search-off") == (
        "Search is off: the search model is downloading (3%). Details")
    assert axe_violations(page) == []  # the banner sits in a landmark, too
    app.extensions["image_browser"].search.turn_on(WordEmbedder())
    page.wait_for_function("() => !document.querySelector('.search input').disabled",
                           timeout=15000)
    assert page.is_hidden("#search-off") and page.is_enabled(".search button")
    page.fill(".search input", "red")
    page.press(".search input", "Enter")
    page.wait_for_url("**/?q=red")


# --- legal but odd file names ------------------------------------------------------------

SPOOF = "spoof\u202eabc.jpg"  # with the override live, it reads "spoofgpj.cba"
ODD_NAMES = ["new\nline.jpg", "back\\slash.jpg", "100% sure?.jpg", "hash#tag.jpg", SPOOF,
             "\u05ea\u05de\u05d5\u05e0\u05d4.jpg"]  # a Hebrew name: right to left, legitimately

# x of each character that has a box, in logical order: increasing means read as stored.
CHARACTER_XS = """el => { const text = el.firstChild, range = document.createRange(), xs = [];
    for (let i = 0; i < text.length; i++) { range.setStart(text, i); range.setEnd(text, i + 1);
        const box = range.getBoundingClientRect(); if (box.width > 0) xs.push(box.left); }
    return xs; }"""


@pytest.fixture(scope="module")
def odd_server(module_db_url, tmp_path_factory):
    """The app over a library of odd names synced by the real sync, on a real HTTP server."""
    from werkzeug.serving import make_server

    from loader.sync import run_sync
    from shared.settings import Settings
    from shared.storage import open_storage
    from shared.store import Catalogue, Schema, connect

    root = tmp_path_factory.mktemp("odd")
    images = root / "images"
    images.mkdir()
    for n, name in enumerate(ODD_NAMES):
        png = png_bytes((30 * n, 120, 200), (90 + n, 60))
        (images / name).write_bytes(png)
    settings = Settings(images_dir=images, data_dir=root / "data", database_url=module_db_url)
    with connect(module_db_url) as conn:
        Schema(conn).ensure(768)
        report = run_sync(Catalogue(conn), open_storage(settings), images, jobs=1,
                          max_pixels=settings.max_image_pixels, progress=False)
    assert not report.failed, report.failed
    app = create_app(settings, embedder=WordEmbedder())
    pages = {i["filename"]: i["page_url"]
             for i in app.test_client().get("/api/images").get_json()["images"]}
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}", pages
    httpd.shutdown()
    thread.join(timeout=5)
    app.extensions["image_browser"].close()


def test_odd_names_open_and_show_their_original(odd_server, watched):
    base, pages = odd_server
    page = watched.page
    for name in ODD_NAMES:
        page.goto(base + pages[name])
        page.wait_for_function("() => { const i = document.getElementById('hero');"
                               " return i && i.complete; }", timeout=10_000)
        assert page.eval_on_selector("#hero", "i => i.naturalWidth") > 0, repr(name)
        original = page.get_attribute("#filename ~ dl a", "href")
        assert page.request.get(base + original).status == 200, repr(name)


def test_a_right_to_left_override_cannot_spoof_a_name(odd_server, watched):
    base, pages = odd_server
    page = watched.page
    page.goto(base + pages[SPOOF])
    xs = page.eval_on_selector("#filename", CHARACTER_XS)
    assert len(xs) > 8 and xs == sorted(xs), xs  # read in the order it is stored
    assert "\u202e" not in page.title()
    assert page.get_attribute("#filename", "dir") == "auto"
    page.goto(base + "/")
    page.wait_for_selector("#grid.justified")
    captions = page.query_selector_all("#grid .caption")
    assert len(captions) == len(ODD_NAMES)
    for caption in captions:
        isolated = caption.query_selector("bdi")  # a name never reorders what is around it
        assert isolated is not None
        if "spoof" in isolated.text_content():
            xs = isolated.evaluate(CHARACTER_XS)
            assert xs == sorted(xs), xs
    shot(watched, "odd-names")
