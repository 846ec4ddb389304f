"""A screenshot of the demo page (`nextscale demo`), taken by headless Chromium after a sampling run and an edit.

    python docs/scripts/demo_screenshot.py --model fmnist --out docs/demo.png    # the shipped model
    python docs/scripts/demo_screenshot.py --model runs/fmnist/var/model --out demo.png
    python docs/scripts/demo_screenshot.py --vae vae.pth --var var_d16.pth --classes 207 360 --out demo.png

Needs the demo extra, selenium, and the Debian packages chromium and chromium-driver (nothing is downloaded). The
page is served on a free loopback port from this process; the picture shows the sampling tab (results, the
coarse-to-fine strip of the first image, the settings and the command line) beside the editing tab (the drawn region
and the results), reduced to a small palette PNG.
"""

from __future__ import annotations

import argparse
import io
import shutil
import tempfile
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from nextscale.demo.model import ModelSource
from nextscale.demo.server import start_demo

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
    "--hide-scrollbars",
)


def open_browser(profile: str, width: int, height: int, chromium: str, chromedriver: str) -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))


def wait_done(driver, prefix: str) -> None:
    driver.find_element(By.ID, f"{prefix}-run").click()
    progress = driver.find_element(By.ID, f"{prefix}-progress")
    WebDriverWait(driver, 600).until(lambda d: progress.get_attribute("data-state") in ("done", "error"))
    if progress.get_attribute("data-state") == "error":
        raise SystemExit(f"the demo answered: {driver.find_element(By.ID, 'error').text}")


def shot(driver, width: int) -> Image.Image:
    """The whole page (not only the window): the viewport is stretched to the page's height for the picture."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    picture = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return picture


def sample_view(driver, classes: list[str], per_class: int, seed: int, width: int) -> Image.Image:
    driver.find_element(By.ID, "tab-sample").click()
    chooser = driver.find_element(By.ID, "sample-classes")
    if chooser.is_displayed():
        select = Select(chooser)
        select.deselect_all()
        for value in classes:
            select.select_by_value(value)
    else:
        field = driver.find_element(By.ID, "sample-classes-text")
        field.clear()
        field.send_keys(", ".join(classes))
    for element_id, value in (("sample-per-class", per_class), ("sample-seed", seed)):
        field = driver.find_element(By.ID, element_id)
        field.clear()
        field.send_keys(str(value))
    wait_done(driver, "sample")
    return shot(driver, width)


def edit_view(driver, seed: int, width: int) -> Image.Image:
    """Edit the first example image (or the first sample): in-paint a box in its middle."""
    examples = driver.find_elements(By.CSS_SELECTOR, "#edit-examples img.example")
    if examples:
        driver.find_element(By.ID, "tab-edit").click()
        examples[0].click()
    else:
        driver.find_element(By.CSS_SELECTOR, "#sample-results figure button.edit-this").click()
    canvas = driver.find_element(By.ID, "edit-canvas")
    quarter = canvas.size["width"] // 4
    driver.find_element(By.ID, "tool-box").click()
    ActionChains(driver).move_to_element_with_offset(
        canvas, -quarter + 4, -quarter + 4
    ).click_and_hold().move_by_offset(2 * quarter - 8, 2 * quarter - 8).release().perform()
    field = driver.find_element(By.ID, "edit-seed")
    field.clear()
    field.send_keys(str(seed))
    wait_done(driver, "edit")
    return shot(driver, width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory")
    parser.add_argument("--vae", help="official tokenizer checkpoint (with --var)")
    parser.add_argument("--var", help="official transformer checkpoint (with --vae)")
    parser.add_argument("--classes", nargs="+", default=["0", "7", "9"], help="class ids to sample")
    parser.add_argument("--per-class", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=1100, help="page width, CSS pixels")
    parser.add_argument("--colors", type=int, default=128, help="palette size of the PNG (smaller file)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    parser.add_argument("--out", default="docs/demo.png")
    args = parser.parse_args()

    server = start_demo(ModelSource(model=args.model, vae=args.vae, var=args.var))
    profile = tempfile.mkdtemp(prefix="nextscale-chromium-")
    driver = open_browser(profile, args.width, 900, args.chromium, args.chromedriver)
    try:
        driver.get(server.url)
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        sampling = sample_view(driver, args.classes, args.per_class, args.seed, args.width)
        editing = edit_view(driver, args.seed, args.width)
    finally:
        driver.quit()
        server.stop()
        shutil.rmtree(profile, ignore_errors=True)
    both = Image.new("RGB", (sampling.width + editing.width + 12, max(sampling.height, editing.height)), "#c9ced8")
    both.paste(sampling, (0, 0))
    both.paste(editing, (sampling.width + 12, 0))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    both.quantize(colors=args.colors, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"wrote {out} ({both.width}×{both.height}, {out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
