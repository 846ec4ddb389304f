"""The demo page in a real browser: headless Chromium (the Debian packages `chromium` and `chromium-driver`) driven
through selenium, against a demo server on a free loopback port. It samples, watches the previews replace each other,
draws a region with the mouse (brush and box) and edits it, and checks the images that come back and the messages for
bad input. Nothing is downloaded: the browser and its driver are the system's.

Skipped, with the reason, only when selenium, /usr/bin/chromium or /usr/bin/chromedriver is absent."""

from __future__ import annotations

import base64
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the demo extra is not installed (pip install 'nextscale[demo]')")
pytest.importorskip("uvicorn", reason="the demo extra is not installed (pip install 'nextscale[demo]')")
pytest.importorskip("selenium", reason="selenium is not installed (pip install selenium)")

from conftest import debug_pair  # noqa: E402
from demo_support import save_debug_model  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

import nextscale  # noqa: E402
from nextscale.demo.model import ModelSource  # noqa: E402
from nextscale.demo.server import start_demo  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# flags that work headless as root in a container, with no network use of the browser's own
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)
WAIT_SECONDS = 30


def start_chromium(user_data_dir: str) -> webdriver.Chrome:
    """Headless Chromium from the system packages (selenium's driver manager is skipped: both paths are given)."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not found (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """The demo of the debug model opened in headless Chromium; yields (driver, server)."""
    model_dir = save_debug_model(tmp_path_factory.mktemp("demo-browser") / "model")
    server = start_demo(ModelSource(model=str(model_dir)))
    profile = tempfile.mkdtemp(prefix="nextscale-chromium-")
    driver = None
    try:
        driver = start_chromium(profile)
        driver.get(server.url)
        wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        yield driver, server
    finally:
        if driver is not None:
            driver.quit()
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, condition, seconds: float = WAIT_SECONDS):
    return WebDriverWait(driver, seconds).until(condition)


def by_id(driver, element_id: str):
    return driver.find_element(By.ID, element_id)


def set_value(driver, element_id: str, value) -> None:
    field = by_id(driver, element_id)
    field.clear()
    field.send_keys(str(value))


def picture(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,"), data_url[:40]
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as image:
        return np.array(image.convert("RGB"))


def run_and_wait(driver, prefix: str) -> str:
    """Press the run button of `prefix` ('sample' or 'edit') and wait until the results are done or an error shows."""
    by_id(driver, f"{prefix}-run").click()
    wait_for(driver, lambda d: by_id(d, f"{prefix}-progress").get_attribute("data-state") in ("done", "error"))
    return by_id(driver, f"{prefix}-progress").get_attribute("data-state")


def results(driver, prefix: str) -> list[np.ndarray]:
    images = driver.find_elements(By.CSS_SELECTOR, f"#{prefix}-results img.result")
    return [picture(image.get_attribute("src")) for image in images]


def sample(driver, classes: list[str], per_class: int, seed: int) -> list[np.ndarray]:
    by_id(driver, "tab-sample").click()
    chooser = Select(by_id(driver, "sample-classes"))
    chooser.deselect_all()
    for value in classes:
        chooser.select_by_value(value)
    set_value(driver, "sample-per-class", per_class)
    set_value(driver, "sample-seed", seed)
    assert run_and_wait(driver, "sample") == "done", by_id(driver, "error").text
    return results(driver, "sample")


def test_sampling_in_the_browser(page):
    driver, _ = page
    # record every image the first tile shows, to see the previews replace each other as the scales arrive
    driver.execute_script(
        "window.shown = [];"
        "new MutationObserver((changes) => changes.forEach((c) => {"
        "  if (c.target.matches('#sample-results figure:first-child img')) window.shown.push(c.target.src);"
        "})).observe(document.getElementById('sample-results'), {subtree: true, attributes: true,"
        "  attributeFilter: ['src']});"
    )
    first = sample(driver, ["0", "5"], per_class=2, seed=1)
    assert len(first) == 4
    assert all(image.shape == (8, 8, 3) and image.std() > 0 for image in first), "blank or wrongly sized images"
    shown = driver.execute_script("return window.shown;")
    assert len(shown) >= 4 and picture(shown[-1]).tobytes() == first[0].tobytes(), "no preview before the image"
    strip = driver.find_elements(By.CSS_SELECTOR, "#sample-strip img.scale-preview")
    assert len(strip) == 4 and all(picture(image.get_attribute("src")).shape == (8, 8, 3) for image in strip)
    assert picture(strip[-1].get_attribute("src")).tobytes() == first[0].tobytes()  # the last scale's is the image
    captions = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#sample-results figcaption span")]
    assert captions == ["circle", "circle", "checkerboard", "checkerboard"]
    command = by_id(driver, "sample-command").text
    assert (
        command.startswith("nextscale sample --model ") and "--class 0 --class 5" in command and "--seed 1" in command
    )
    download = driver.find_element(By.CSS_SELECTOR, "#sample-results figure a.download")
    assert download.get_attribute("download") == "circle_seed1_0.png"
    assert picture(download.get_attribute("href")).tobytes() == first[0].tobytes()

    again = sample(driver, ["0", "5"], per_class=2, seed=1)
    other = sample(driver, ["0", "5"], per_class=2, seed=2)
    assert [a.tobytes() for a in again] == [f.tobytes() for f in first]
    assert all(o.tobytes() != f.tobytes() for o, f in zip(other, first)), "different seeds gave the same image"


def test_bad_input_shows_the_servers_message(page, tmp_path):
    driver, _ = page
    by_id(driver, "tab-sample").click()
    set_value(driver, "sample-cfg", 1000)
    assert run_and_wait(driver, "sample") == "error"
    assert by_id(driver, "error").is_displayed() and "cfg must be in [0, 20], got 1000" in by_id(driver, "error").text
    set_value(driver, "sample-cfg", 4)
    driver.find_element(By.CSS_SELECTOR, "#sample-form details.more summary").click()  # the pruning fields
    assert by_id(driver, "sample-prune-ratio").get_attribute("value") == "0"
    set_value(driver, "sample-prune-ratio", 1)
    assert run_and_wait(driver, "sample") == "error"
    assert "prune_ratio must be in [0, 0.95], got 1" in by_id(driver, "error").text
    set_value(driver, "sample-prune-ratio", 0.5)
    assert run_and_wait(driver, "sample") == "done"
    assert not by_id(driver, "error").is_displayed()
    assert "--prune-ratio 0.5" in by_id(driver, "sample-command").text

    by_id(driver, "tab-edit").click()
    text_file = tmp_path / "notes.png"
    text_file.write_text("not a picture")
    by_id(driver, "edit-upload").send_keys(str(text_file))
    wait_for(driver, lambda d: by_id(d, "error").is_displayed())
    assert "is not an image this server can read" in by_id(driver, "error").text


def cell_offset(cell: int, side: int, canvas_px: int) -> int:
    """Offset from the canvas centre (selenium's origin) to the centre of token `cell` along one axis."""
    step = canvas_px / side
    return round(-canvas_px / 2 + (cell + 0.5) * step)


def test_editing_with_a_drawn_region_in_the_browser(page, tmp_path):
    driver, _ = page
    by_id(driver, "tab-edit").click()
    # a picture of the user's: uploaded, fitted to the model's 8×8 on the server
    upload = tmp_path / "photo.png"
    gradient = np.linspace(0, 255, 24 * 16 * 3).reshape(16, 24, 3).astype(np.uint8)
    Image.fromarray(gradient).save(upload)
    by_id(driver, "edit-upload").send_keys(str(upload))
    wait_for(driver, lambda d: "photo.png" in by_id(d, "edit-canvas-hint").text)
    # then an example test image instead
    driver.find_elements(By.CSS_SELECTOR, "#edit-examples img.example")[3].click()
    wait_for(driver, lambda d: "test image" in by_id(d, "edit-canvas-hint").text)

    canvas = by_id(driver, "edit-canvas")
    side, size = 4, canvas.size["width"]
    at = lambda i, j: (cell_offset(j, side, size), cell_offset(i, side, size))  # noqa: E731
    by_id(driver, "tool-brush").click()
    actions = ActionChains(driver)
    actions.move_to_element_with_offset(canvas, *at(1, 1)).click_and_hold()
    actions.move_to_element_with_offset(canvas, *at(1, 2)).move_to_element_with_offset(canvas, *at(2, 2)).release()
    actions.perform()
    assert canvas.get_attribute("data-drawn") == "3"
    by_id(driver, "tool-box").click()
    x, y = at(3, 0)
    ActionChains(driver).move_to_element_with_offset(canvas, x - 20, y - 20).click_and_hold().move_by_offset(
        30, 30
    ).release().perform()
    assert canvas.get_attribute("data-drawn") == "4"

    Select(by_id(driver, "edit-mode")).select_by_value("inpaint")
    set_value(driver, "edit-samples", 3)
    set_value(driver, "edit-seed", 2)
    assert run_and_wait(driver, "edit") == "done", by_id(driver, "error").text
    edited = results(driver, "edit")
    assert len(edited) == 3
    assert all(image.shape == (8, 8, 3) and image.std() > 0 for image in edited), "blank or wrongly sized results"
    assert len({image.tobytes() for image in edited}) == 3, "the results of one edit should differ"
    # the mask file for the command line holds exactly the tokens drawn with the mouse (white = redrawn)
    mask = picture(by_id(driver, "edit-mask-download").get_attribute("href"))[:, :, 0]
    drawn = np.zeros((side, side), dtype=np.uint8)
    for i, j in ((1, 1), (1, 2), (2, 2), (3, 0)):
        drawn[i, j] = 255
    assert np.array_equal(mask, np.kron(drawn, np.ones((2, 2), dtype=np.uint8)))
    example = driver.find_elements(By.CSS_SELECTOR, "#edit-examples img.example")[3].get_attribute("src")
    assert picture(by_id(driver, "edit-input-download").get_attribute("href")).tobytes() == picture(example).tobytes()
    assert by_id(driver, "edit-command").text.startswith("nextscale edit --model ")

    # a class edit of the region, started from a result: the class is required and steers the redrawn tokens
    driver.find_element(By.CSS_SELECTOR, "#edit-results figure button.edit-this").click()
    Select(by_id(driver, "edit-mode")).select_by_value("class-edit")
    Select(by_id(driver, "edit-class")).select_by_value("7")
    assert run_and_wait(driver, "edit") == "done", by_id(driver, "error").text
    assert "--mode class-edit --class 7" in by_id(driver, "edit-command").text
    # and an empty region is refused with the server's message
    by_id(driver, "edit-clear").click()
    assert run_and_wait(driver, "edit") == "error"
    assert "draw a region on the image first" in by_id(driver, "error").text


def test_the_handover_field_shows_only_with_a_refiner(page):
    """Without a refiner the page offers no handover scale; with one (here the model itself) it does, and sends it."""
    driver, server = page
    by_id(driver, "tab-sample").click()
    assert not by_id(driver, "sample-handover-scale").is_displayed()
    model_dir = server.engine.source.model
    refined = start_demo(ModelSource(model=model_dir, refiner=model_dir))
    try:
        driver.get(refined.url)
        wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        assert f"refiner {model_dir}" in by_id(driver, "model-info").text
        assert by_id(driver, "sample-handover-scale").is_displayed()
        assert by_id(driver, "sample-handover-scale").get_attribute("value") == "0"
        set_value(driver, "sample-handover-scale", 2)
        assert "the refiner draws from 3×3 on" in by_id(driver, "sample-handover-hint").text
        set_value(driver, "sample-per-class", 1)
        assert run_and_wait(driver, "sample") == "done", by_id(driver, "error").text
        command = by_id(driver, "sample-command").text
        assert f"--refiner {Path(model_dir).resolve()}" in command and "--handover-scale 2" in command
    finally:
        refined.stop()
        driver.get(server.url)  # back to the page the other tests use
        wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")


def test_many_classes_are_typed_as_ids(page, tmp_path):
    """A model with more classes than a list can show (and no names) takes class ids typed into a field."""
    driver, _ = page
    tokenizer, model = debug_pair(num_classes=1000)
    model_dir = nextscale.save_pretrained(tmp_path / "model", tokenizer, model)
    server = start_demo(ModelSource(model=str(model_dir)))
    try:
        driver.get(server.url)
        wait_for(driver, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true")
        assert not by_id(driver, "sample-classes").is_displayed()
        set_value(driver, "sample-classes-text", "207, 980")
        set_value(driver, "sample-per-class", 1)
        assert run_and_wait(driver, "sample") == "done", by_id(driver, "error").text
        captions = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#sample-results figcaption span")]
        assert captions == ["class 207", "class 980"] and len(results(driver, "sample")) == 2
        set_value(driver, "sample-classes-text", "207, tabby cat")
        assert run_and_wait(driver, "sample") == "error"
        assert "unknown class name 'tabby cat'" in by_id(driver, "error").text
    finally:
        server.stop()
