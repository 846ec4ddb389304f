"""What the demo's tests share: the debug model saved as a demo would find it, a live server on a loopback port
(module-scoped fixtures `model_dir` and `server`), and small HTTP and image helpers.

The model is the `debug` preset pair with random weights (8×8 images, scales 1-4, 10 classes), saved with class names
and a record of procedural training data, so that the demo offers example images."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the demo extra is not installed (pip install 'nextscale[demo]')")
pytest.importorskip("uvicorn", reason="the demo extra is not installed (pip install 'nextscale[demo]')")

import numpy as np  # noqa: E402
from conftest import debug_pair  # noqa: E402
from PIL import Image  # noqa: E402

import nextscale  # noqa: E402
from nextscale import cli  # noqa: E402
from nextscale.data.procedural import PROCEDURAL_CLASSES  # noqa: E402
from nextscale.demo.model import ModelSource  # noqa: E402
from nextscale.demo.server import start_demo  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CLASSES = list(PROCEDURAL_CLASSES[:10])


def save_debug_model(directory: Path) -> Path:
    """The debug pair saved as `nextscale train` would: class names and the data it was trained on."""
    tokenizer, model = debug_pair()
    data = {"name": "procedural", "image_size": 8, "num_samples": 50}
    return nextscale.save_pretrained(directory, tokenizer, model, {"classes": CLASSES, "trained_with": {"data": data}})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_debug_model(tmp_path_factory.mktemp("demo") / "model")


@pytest.fixture(scope="module")
def server(model_dir):
    running = start_demo(ModelSource(model=str(model_dir)))
    yield running
    running.stop()


# ---- HTTP helpers ----------------------------------------------------------------------------------------------------


def request(url: str, body=None, raw: bytes | None = None, headers: dict | None = None):
    """(status, headers, body bytes) of a GET (no body) or a POST of JSON `body` / `raw` bytes."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def events(url: str, body) -> list[dict]:
    status, headers, content = request(url, body)
    assert status == 200, content
    assert headers["Content-Type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in content.decode().splitlines() if line.strip()]


def picture(data_url: str) -> np.ndarray:
    """A PNG data URL → (H, W, 3) uint8."""
    assert data_url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as image:
        assert image.format == "PNG"
        return np.array(image.convert("RGB"))


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_png(data: str, path: Path) -> Path:
    path.write_bytes(base64.b64decode(data.split(",", 1)[1]))
    return path


def region(*cells: tuple[int, int], side: int = 4) -> list[list[int]]:
    grid = [[0] * side for _ in range(side)]
    for i, j in cells:
        grid[i][j] = 1
    return grid


def run_cli(argv: list[str], monkeypatch) -> int:
    """`nextscale ARGV` in this process; the exit status."""
    try:
        return cli.main(argv)
    except SystemExit as exit_:
        return exit_.code
