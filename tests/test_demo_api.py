"""The demo's HTTP API against a real server on a loopback port (no browser): the streamed events, the images and
their reproduction from the command line the page shows, and a clear 4xx for every kind of bad request.

The model is the `debug` preset pair with random weights (8×8 images, scales 1-4, 10 classes), saved with class names
and a record of procedural training data, so that the demo offers example images."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the demo extra is not installed (pip install 'nextscale[demo]')")
pytest.importorskip("uvicorn", reason="the demo extra is not installed (pip install 'nextscale[demo]')")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from conftest import ASSETS, debug_pair, write_debug_tokenizer  # noqa: E402
from PIL import Image  # noqa: E402

import nextscale  # noqa: E402
from nextscale import cli  # noqa: E402
from nextscale.cli import demo as demo_cli  # noqa: E402
from nextscale.data.procedural import PROCEDURAL_CLASSES  # noqa: E402
from nextscale.demo import server as demo_server  # noqa: E402
from nextscale.demo.examples import examples_from_metadata  # noqa: E402
from nextscale.demo.model import ModelSource  # noqa: E402
from nextscale.demo.server import DEFAULT_HOST, DEFAULT_PORT, run_demo, start_demo  # noqa: E402
from nextscale.images import make_grid  # noqa: E402
from nextscale.model.raster import RasterTransformer, raster_preset  # noqa: E402
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset  # noqa: E402

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


# ---- the page's facts ----------------------------------------------------------------------------------------------


def test_info_describes_the_model_and_offers_test_images(server):
    status, _, content = request(server.url + "api/info")
    info = json.loads(content)
    assert status == 200
    assert (info["image_size"], info["token_side"], info["scales"]) == (8, 4, [1, 2, 3, 4])
    assert info["class_names"] == CLASSES and info["num_classes"] == 10
    # the forms start from the model's sampling settings (the "demo" preset) and from the editing preset
    assert info["defaults"]["sample"] == asdict(nextscale.SamplingSettings.preset("demo"))
    assert info["defaults"]["sample"]["cfg"] == 4.0 and info["defaults"]["sample"]["top_k"] == 900
    assert info["defaults"]["edit"] == asdict(nextscale.SamplingSettings.preset("edit"))
    # one test image of each class, from the procedural data recorded in the model's nextscale.json
    assert [example["label"] for example in info["examples"]] == list(range(10))
    for example in info["examples"]:
        assert CLASSES[example["label"]] in example["name"]
        assert picture(example["image"]).shape == (8, 8, 3)
    test_set = nextscale.data.build.build_dataset("procedural", "test", 8, num_samples=50)
    image_3HW, label = test_set[0]
    expected = nextscale.images.to_uint8(image_3HW.add(1).mul(0.5)[None])[0].numpy()
    assert np.array_equal(picture(info["examples"][label]["image"]), expected)


def test_fashion_mnist_models_offer_real_test_images(tmp_path):
    """A Fashion-MNIST model gets the first test image of each class, also when the folder it was trained from is
    gone (then from the Debian package's place)."""
    from nextscale.data.fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, FASHION_MNIST_CLASSES

    if not DEFAULT_FASHION_MNIST_ROOT.is_dir():
        pytest.skip(f"Fashion-MNIST is not in {DEFAULT_FASHION_MNIST_ROOT} (apt-get install dataset-fashion-mnist)")
    data = {"name": "fashion-mnist", "image_size": 32, "root": str(tmp_path / "gone")}
    examples = examples_from_metadata({"trained_with": {"data": data}}, image_size=16)
    assert [example.label for example in examples] == list(range(10))
    test_set = nextscale.data.build.build_dataset("fashion-mnist", "test", 32)
    for example in examples:
        index = int(re.fullmatch(r"test image (\d+) \((.+)\)", example.name)[1])
        assert example.name.endswith(f"({FASHION_MNIST_CLASSES[example.label]})")
        image_3HW, label = test_set[index]
        assert label == example.label and example.image.size == (16, 16)
        full = nextscale.images.to_pil(image_3HW.add(1).mul(0.5)[None])[0]
        assert np.array_equal(np.array(example.image), np.array(full.resize((16, 16), Image.Resampling.LANCZOS)))
    assert examples_from_metadata({}, 32) == []


def test_page_loads_nothing_from_elsewhere(server):
    status, headers, content = request(server.url)
    assert status == 200 and b"<canvas" in content
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    static = REPO / "nextscale" / "demo" / "static"
    for name in ("index.html", "demo.js", "demo.css"):
        text = (static / name).read_text()
        assert not re.search(r"(https?:)?//[\w.-]+\.\w+/", text), f"{name} refers to another site"
        assert "@import" not in text and "@font-face" not in text
        status, _, served = request(server.url + ("" if name == "index.html" else f"static/{name}"))
        assert status == 200 and served.decode() == text


# ---- sampling ------------------------------------------------------------------------------------------------------


def test_sample_streams_a_preview_per_scale_then_the_images(server):
    out = events(server.url + "api/sample", {"classes": [0, "square"], "per_class": 2, "seed": 3})
    # a preview after each scale but the last, whose decode is the image itself
    assert [e["event"] for e in out] == ["start", "scale", "scale", "scale", "done"]
    assert out[0] == {"event": "start", "count": 4, "sides": [1, 2, 3, 4]}
    assert [(e["index"], e["side"]) for e in out[1:4]] == [(0, 1), (1, 2), (2, 3)]
    done = out[-1]
    assert done["labels"] == [0, 0, 1, 1] and done["label_names"] == ["circle", "circle", "square", "square"]
    images = [picture(url) for url in done["images"]]
    assert all(image.shape == (8, 8, 3) for image in images)
    assert all(image.std() > 0 for image in images), "a blank image"
    previews = [[picture(url) for url in scale["previews"]] for scale in out[1:4]]
    assert all(len(scale) == 4 and all(image.shape == (8, 8, 3) for image in scale) for scale in previews)
    # they are the decodes of f̂ after each scale: what the first k+1 scales of the image's own tokens decode to
    pipeline = nextscale.Pipeline.from_pretrained(server.engine.source.model)
    generation = pipeline.generate([0, 0, 1, 1], seed=3, output_type="generation")
    fhat_after_each_scale = pipeline.tokenizer.quantizer.fhat_from_tokens(generation.token_maps)
    for k, scale in enumerate(previews):
        with torch.no_grad():
            decoded = pipeline.tokenizer.decode_fhat(fhat_after_each_scale[k]).add(1).mul(0.5)
        expected = nextscale.images.to_uint8(decoded).numpy().astype(int)
        assert np.abs(np.stack(scale).astype(int) - expected).max() <= 1  # rounding of float sums in another order
    assert all(not np.array_equal(previews[0][i], images[i]) for i in range(4)), "the 1×1 preview is the image"


def test_same_seed_same_images_other_seed_other_images(server):
    body = {"classes": [4], "per_class": 2, "seed": 11, "previews": False}
    first = events(server.url + "api/sample", body)[-1]["images"]
    again = events(server.url + "api/sample", body)[-1]["images"]
    other = events(server.url + "api/sample", {**body, "seed": 12})[-1]["images"]
    assert first == again
    assert first[0] != other[0] and first[1] != other[1]
    assert first[0] != first[1]  # two draws of one class differ too


def test_concurrent_requests_wait_their_turn(server):
    bodies = [{"classes": [c], "per_class": 2, "seed": c, "previews": c % 2 == 0} for c in range(4)]
    alone = [events(server.url + "api/sample", body)[-1]["images"] for body in bodies]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda body: events(server.url + "api/sample", body)[-1]["images"], bodies))
    assert together == alone


@pytest.mark.parametrize("prune_ratio", [0.0, 0.5])
def test_sample_is_what_the_pipeline_draws(server, model_dir, prune_ratio):
    body = {"classes": [2, 7], "per_class": 1, "seed": 5, "cfg": 2.5, "top_k": 20, "top_p": 0.9, "more_smooth": True}
    body.update(prune_ratio=prune_ratio, prune_scales=2)
    done = events(server.url + "api/sample", body)[-1]
    pipeline = nextscale.Pipeline.from_pretrained(model_dir)
    settings = nextscale.SamplingSettings(
        cfg=2.5, top_k=20, top_p=0.9, more_smooth=True, prune_ratio=prune_ratio, prune_scales=2
    )
    expected = pipeline.generate([2, 7], seed=5, settings=settings)
    assert [picture(url).tobytes() for url in done["images"]] == [
        array.numpy().tobytes() for array in nextscale.images.to_uint8(expected)
    ]
    shown = done["settings"]
    assert {key: shown[key] for key in body} == body
    # the command line names pruning only when it is on (the presets have it off; 2 scales is their default)
    assert ("--prune-ratio 0.5" in done["command"]) == (prune_ratio > 0)
    assert "--prune-scales" not in done["command"]


def test_pruning_changes_the_images(server):
    body = {"classes": [3], "per_class": 2, "seed": 6, "previews": False}
    plain = events(server.url + "api/sample", body)[-1]["images"]
    pruned = events(server.url + "api/sample", {**body, "prune_ratio": 0.8, "prune_scales": 2})[-1]["images"]
    assert plain != pruned


def test_the_command_line_shown_reproduces_the_samples(server, tmp_path, monkeypatch):
    body = {"classes": [1, 3], "per_class": 2, "seed": 8, "cfg": 1.5, "top_k": 0, "top_p": 0.0}
    done = events(server.url + "api/sample", {**body, "prune_ratio": 0.5, "prune_scales": 3})[-1]
    argv = shlex.split(done["command"])
    assert argv[argv.index("--prune-ratio") + 1] == "0.5" and argv[argv.index("--prune-scales") + 1] == "3"
    assert argv[:2] == ["nextscale", "sample"] and argv[argv.index("--device") + 1] == "cpu"
    argv[argv.index("--out") + 1] = str(tmp_path / "grid.png")
    assert run_cli(argv[1:], monkeypatch) == 0
    images = torch.from_numpy(np.stack([picture(url) for url in done["images"]])).permute(0, 3, 1, 2) / 255.0
    expected = make_grid(images, columns=2, upscale=128 // 8)  # the layout of `nextscale sample` (a row per class)
    with Image.open(tmp_path / "grid.png") as written:
        assert np.array_equal(np.array(written.convert("RGB")), np.array(expected))


# ---- editing -------------------------------------------------------------------------------------------------------


def test_edit_streams_results_with_the_input_and_mask_files(server):
    info = json.loads(request(server.url + "api/info")[2])
    example = info["examples"][5]["image"]
    body = {"image": example, "region": region((1, 1), (1, 2), (2, 1), (2, 2)), "samples": 3, "seed": 4}
    out = events(server.url + "api/edit", body)
    assert [e["event"] for e in out] == ["start", "scale", "scale", "scale", "done"]
    done = out[-1]
    results = [picture(url) for url in done["images"]]
    assert len(results) == 3 and all(image.shape == (8, 8, 3) and image.std() > 0 for image in results)
    assert len({image.tobytes() for image in results}) == 3, "the samples of one edit should differ"
    assert np.array_equal(picture(done["input"]), picture(example))
    mask = picture(done["mask"])[:, :, 0]
    assert np.array_equal(mask, np.kron(np.array(body["region"]), np.ones((2, 2), dtype=int)) * 255)
    assert done["regenerate"] == body["region"] and done["settings"]["regenerated_tokens"] == 4
    # out-painting keeps the drawn area and redraws the rest
    outpaint = events(server.url + "api/edit", {**body, "mode": "outpaint"})[-1]
    assert outpaint["regenerate"] == [[1 - v for v in row] for row in body["region"]]


def test_the_command_line_shown_reproduces_the_edit(server, tmp_path, monkeypatch):
    info = json.loads(request(server.url + "api/info")[2])
    body = {
        "image": info["examples"][2]["image"],
        "region": region((0, 0), (0, 1), (1, 0), (3, 3)),
        "mode": "class-edit",
        "class": "ring",
        "samples": 2,
        "seed": 9,
        "cfg": 2.0,
    }
    done = events(server.url + "api/edit", body)[-1]
    argv = shlex.split(done["command"])
    assert argv[:2] == ["nextscale", "edit"] and argv[argv.index("--class") + 1] == str(CLASSES.index("ring"))
    write_png(done["input"], tmp_path / "input.png")
    write_png(done["mask"], tmp_path / "mask.png")
    argv[argv.index("--out") + 1] = str(tmp_path / "edit.png")
    monkeypatch.chdir(tmp_path)
    assert run_cli(argv[1:], monkeypatch) == 0
    for i, url in enumerate(done["images"]):
        with Image.open(tmp_path / f"edit_{i}.png") as written:
            assert np.array_equal(np.array(written.convert("RGB")), picture(url))


def test_upload_is_fitted_to_the_model(server):
    wide = Image.new("RGB", (30, 12), (200, 30, 30))
    status, _, content = request(server.url + "api/image", {"image": data_url(wide)})
    answer = json.loads(content)
    assert status == 200 and picture(answer["image"]).shape == (8, 8, 3)
    assert "30×12" in answer["note"]


# ---- bad requests: a 4xx with a one-line message, never a traceback -------------------------------------------------

GOOD_REGION = region((1, 1))
NOT_AN_IMAGE = "data:text/plain;base64," + base64.b64encode(b"hello, not a picture").decode()
BAD_REQUESTS = {
    "unknown class name": ("sample", {"classes": ["unicorn"]}, "unknown class name 'unicorn'"),
    "class id out of range": ("sample", {"classes": [10]}, "not a class id in [0, 10)"),
    "no class": ("sample", {"classes": []}, "choose at least one class"),
    "huge batch": ("sample", {"classes": [0, 1], "per_class": 9}, "at most 16 per request"),
    "cfg too large": ("sample", {"classes": [0], "cfg": 1000}, "cfg must be in [0, 20]"),
    "cfg negative": ("sample", {"classes": [0], "cfg": -1}, "cfg must be in [0, 20]"),
    "cfg not a number": ("sample", {"classes": [0], "cfg": "high"}, "cfg must be a number"),
    "top-p above 1": ("sample", {"classes": [0], "top_p": 1.5}, "top_p must be in [0, 1]"),
    "top-k fractional": ("sample", {"classes": [0], "top_k": 2.5}, "top_k must be an integer"),
    "negative seed": ("sample", {"classes": [0], "seed": -3}, "seed must be an integer"),
    "pruning everything": ("sample", {"classes": [0], "prune_ratio": 1.0}, "prune_ratio must be in [0, 0.95]"),
    "pruning no scale": ("sample", {"classes": [0], "prune_scales": 0}, "prune_scales must be an integer in [1, 4]"),
    "unknown field": ("sample", {"classes": [0], "temperature": 2}, "unknown field(s) temperature"),
    "non-image upload": ("image", {"image": NOT_AN_IMAGE}, "is not an image this server can read"),
    "upload not a data URL": ("image", {"image": "C:/cat.png"}, "not a base64 data URL"),
    "edit of a non-image": ("edit", {"image": NOT_AN_IMAGE, "region": GOOD_REGION}, "not an image"),
    "mask of the wrong size": ("edit", {"region": region((1, 1), side=3)}, "region must be a 4×4 grid of 0/1"),
    "mask of other values": ("edit", {"region": [[0, 2, 0, 0]] * 4}, "region must be a 4×4 grid of 0/1"),
    "empty mask": ("edit", {"region": region()}, "draw a region on the image first"),
    "mask over everything": ("edit", {"region": [[1] * 4] * 4}, "covers the whole image"),
    "unknown mode": ("edit", {"region": GOOD_REGION, "mode": "erase"}, "mode must be one of inpaint, outpaint"),
    "class edit without a class": ("edit", {"region": GOOD_REGION, "mode": "class-edit"}, "needs a class"),
    "too many results": ("edit", {"region": GOOD_REGION, "samples": 17}, "samples must be an integer in [1, 16]"),
    "handover without a refiner": (
        "sample",
        {"classes": [0], "handover_scale": 2},
        "handover_scale 2 needs a refiner model, and this demo runs without one (start it with --refiner DIR",
    ),
    "handover past the scales": ("sample", {"classes": [0], "handover_scale": 5}, "handover_scale must be an integer"),
    "handover in an edit": ("edit", {"region": GOOD_REGION, "handover_scale": 1}, "unknown field(s) handover_scale"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_a_400_with_a_message(server, case):
    endpoint, body, message = BAD_REQUESTS[case]
    if endpoint == "edit":
        body = {"image": data_url(Image.new("RGB", (8, 8), (90, 140, 200))), **body}
    status, headers, content = request(server.url + f"api/{endpoint}", body)
    assert status == 400, content
    assert headers["Content-Type"] == "application/json"
    error = json.loads(content)["error"]
    assert message in error and "\n" not in error and "Traceback" not in error


def test_malformed_and_oversized_bodies_and_unknown_paths(server):
    status, _, content = request(server.url + "api/sample", raw=b"{classes: [0")
    assert status == 400 and json.loads(content)["error"] == "the request body is not valid JSON"
    host, port = server.url.split("//")[1].strip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/api/image")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(9 * 1024 * 1024))
    connection.endheaders()  # the server answers from the declared length, before any of the body
    response = connection.getresponse()
    assert response.status == 413 and "larger than this server accepts" in json.loads(response.read())["error"]
    connection.close()
    status, _, content = request(server.url + "api/nothing-here")
    assert status == 404 and json.loads(content)["error"]
    status, _, content = request(server.url + "api/info", headers={"Host": "rebinding.example:7860"})
    assert status == 400, "a loopback server answers only loopback host names"


# ---- serving: loopback by default, the command, the official checkpoints ---------------------------------------------


def test_binds_loopback_by_default(server):
    assert server.url.startswith("http://127.0.0.1:")
    assert DEFAULT_HOST == "127.0.0.1"
    import inspect

    assert inspect.signature(run_demo).parameters["host"].default == "127.0.0.1"
    parser = cli.common.OneLineParser(prog="nextscale")
    demo_cli.add_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "--model", "m"])
    assert (args.host, args.port) == (DEFAULT_HOST, DEFAULT_PORT)


def test_official_checkpoints(tmp_path):
    vae, var = ASSETS / "tiny_a_vae.pth", ASSETS / "tiny_a_var.pth"
    if not (vae.is_file() and var.is_file()):
        pytest.skip(f"the official-format fixture tiny_a is not in {ASSETS}")
    running = start_demo(ModelSource(vae=str(vae), var=str(var)))
    try:
        info = json.loads(request(running.url + "api/info")[2])
        assert info["image_size"] == 64 and info["class_names"] is None and info["examples"] == []
        done = events(running.url + "api/sample", {"classes": [3], "per_class": 1, "seed": 0})[-1]
        assert picture(done["images"][0]).shape == (64, 64, 3) and done["label_names"] == ["class 3"]
        argv = shlex.split(done["command"])
        assert argv[argv.index("--vae") + 1] == str(vae) and argv[argv.index("--var") + 1] == str(var)
        assert "--model" not in argv
    finally:
        running.stop()


def test_a_shipped_model_by_name(model_dir, monkeypatch):
    """`--model NAME` of a model shipped with the library: its test images are offered and the command lines name it
    (the registry entry here points at the debug model; real entries are folders inside the package)."""
    monkeypatch.setitem(nextscale.pretrained.SHIPPED_MODELS, "debug-shipped", str(model_dir))
    running = start_demo(ModelSource(model="debug-shipped"))
    try:
        info = json.loads(request(running.url + "api/info")[2])
        assert info["model"] == "debug-shipped" and len(info["examples"]) == 10
        done = events(running.url + "api/sample", {"classes": [0], "per_class": 1, "previews": False})[-1]
        argv = shlex.split(done["command"])
        assert argv[argv.index("--model") + 1] == "debug-shipped"
    finally:
        running.stop()


WITHOUT_THE_EXTRA = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):  # as if starlette and uvicorn were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("starlette", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, Absent())
import nextscale, nextscale.cli, nextscale.cli.demo
assert not [m for m in sys.modules if m.startswith(("starlette", "uvicorn", "nextscale.demo"))]
from nextscale import cli
sys.exit(cli.main(["demo", "--model", sys.argv[1]]))
"""


def test_core_and_command_line_work_without_the_demo_extra(model_dir):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_EXTRA, str(model_dir)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "nextscale demo: error: the demo needs starlette and uvicorn (No module named 'starlette'): "
        "pip install 'nextscale[demo]'"
    )


DEMO_COMMAND = "import sys\nfrom nextscale import cli\nsys.exit(cli.main())\n"


def nextscale_command(*argv: str, **popen) -> subprocess.Popen:
    """`nextscale ARGV` in a subprocess."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", DEMO_COMMAND, *argv]
    return subprocess.Popen(
        command, cwd=REPO, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen
    )


def test_demo_command_serves_until_interrupted(model_dir):
    process = nextscale_command("demo", "--model", str(model_dir), "--port", "0")
    try:
        for line in process.stdout:
            found = re.search(r"open (http://127\.0\.0\.1:\d+/)", line)
            if found:
                break
        else:
            pytest.fail(f"no URL printed; stderr: {process.stderr.read()}")
        done = events(found[1] + "api/sample", {"classes": ["cross"], "per_class": 1})[-1]
        assert picture(done["images"][0]).shape == (8, 8, 3)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0 and "Traceback" not in stderr, stderr


def save_raster_model(directory: Path) -> Path:
    """A next-token (raster) baseline model directory: it samples token by token, so the demo refuses it."""
    tokenizer = Tokenizer(tokenizer_preset("debug", patch_nums=(4,))).eval()
    model = RasterTransformer(raster_preset("debug"), tokenizer.token_space).eval()
    return nextscale.save_pretrained(directory, tokenizer, model)


def test_demo_command_errors_are_one_line(model_dir, tmp_path, monkeypatch, capsys):
    raster_dir = save_raster_model(tmp_path / "raster")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = {
            ("--model", str(tmp_path / "missing")): "model directory not found",
            ("--vae", str(tmp_path / "vae.pth"), "--var", str(tmp_path / "var.pth")): "checkpoint not found",
            ("--model", str(model_dir), "--port", "70000"): "--port 70000",
            ("--model", str(model_dir), "--port", port): f"cannot listen on 127.0.0.1:{port}",
            ("--model", str(model_dir), "--max-images", "0"): "--max-images must be positive",
            ("--model", str(raster_dir)): "this model is a RasterTransformer, not a VAR",
        }
        for argv, message in cases.items():
            assert run_cli(["demo", *argv, "--device", "cpu"], monkeypatch) == 2
            stderr = capsys.readouterr().err
            assert message in stderr and len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize(
    "field, value, off, flag",
    [("guidance_scales", 2, 0, ["--guidance-scales", "2"]), ("inverse_cdf", True, False, ["--inverse-cdf"])],
)
def test_speed_up_settings_reach_the_sampler_and_the_command_line(server, model_dir, field, value, off, flag):
    """A speed-up from the page: the images are the pipeline's with that setting, and the command shown has it."""
    body = {"classes": [2, 7], "per_class": 1, "seed": 5, "cfg": 3.0, field: value, "previews": False}
    done = events(server.url + "api/sample", body)[-1]
    pipeline = nextscale.Pipeline.from_pretrained(model_dir)
    expected = pipeline.generate([2, 7], seed=5, cfg=3.0, **{field: value})
    assert [picture(url).tobytes() for url in done["images"]] == [
        array.numpy().tobytes() for array in nextscale.images.to_uint8(expected)
    ]
    argv = shlex.split(done["command"])
    assert argv[argv.index(flag[0]) : argv.index(flag[0]) + len(flag)] == flag
    plain = events(server.url + "api/sample", {**body, field: off})[-1]["images"]
    assert plain != done["images"]


# ---- collaborative decoding: a refiner draws the scales from the request's handover_scale on -----------------------


def save_refiner(directory: Path) -> Path:
    """Another debug transformer (seed 1: other weights) saved with the debug model's tokenizer: a refiner for it."""
    tokenizer, _ = debug_pair()
    _, refiner = debug_pair(1)
    return nextscale.save_pretrained(directory, tokenizer, refiner)


@pytest.fixture(scope="module")
def refiner_dir(tmp_path_factory) -> Path:
    return save_refiner(tmp_path_factory.mktemp("demo") / "refiner")


@pytest.fixture(scope="module")
def refined_server(model_dir, refiner_dir):
    running = start_demo(ModelSource(model=str(model_dir), refiner=str(refiner_dir)))
    yield running
    running.stop()


def sample_events(server, body) -> tuple[list[list[np.ndarray]], list[np.ndarray], dict]:
    """(previews after each scale but the last, the images, the done event) of a sample request."""
    out = events(server.url + "api/sample", body)
    previews = [[picture(url) for url in e["previews"]] for e in out if e["event"] == "scale"]
    return previews, [picture(url) for url in out[-1]["images"]], out[-1]


def test_info_names_the_refiner(server, refined_server, refiner_dir):
    """The page offers a handover only when /api/info names a refiner; a request without one may still say 0."""
    assert json.loads(request(server.url + "api/info")[2])["refiner"] is None
    info = json.loads(request(refined_server.url + "api/info")[2])
    assert info["refiner"] == str(refiner_dir) and info["defaults"]["sample"]["handover_scale"] == 0
    done = events(server.url + "api/sample", {"classes": [0], "handover_scale": 0, "previews": False})[-1]
    assert "refiner" not in done["settings"] and "--refiner" not in done["command"]


def test_a_refiner_that_is_the_model_draws_the_models_images(server, model_dir):
    """The same directory as model and refiner: every handover scale gives the images (and previews) the model
    draws alone, as the sampler promises (the refiner's cache is refilled from the same inputs)."""
    same = start_demo(ModelSource(model=str(model_dir), refiner=str(model_dir)))
    try:
        body = {"classes": [2, 7], "per_class": 2, "seed": 5, "cfg": 2.5, "top_k": 20, "top_p": 0.9}
        alone_previews, alone, _ = sample_events(server, body)
        for handover in range(1, 5):  # 4 = the number of scales: the refiner never takes over
            previews, images, done = sample_events(same, {**body, "handover_scale": handover})
            assert [a.tobytes() for a in images] == [b.tobytes() for b in alone], handover
            assert np.array_equal(np.array(previews), np.array(alone_previews)), handover
            assert done["settings"]["handover_scale"] == handover
            argv = shlex.split(done["command"])
            assert argv[argv.index("--handover-scale") + 1] == str(handover)
            assert argv[argv.index("--refiner") + 1] == str(model_dir.resolve())
    finally:
        same.stop()


def test_another_refiner_draws_the_scales_from_the_handover_on(
    server, refined_server, refiner_dir, tmp_path, monkeypatch
):
    """A refiner with other weights: the scales before the handover are the model's (same previews), the images
    differ from the model's own at the same seed, and the command line shown draws them again."""
    body = {"classes": [1, 3], "per_class": 2, "seed": 8, "cfg": 2.0}
    alone_previews, alone, _ = sample_events(server, body)
    _, unused, _ = sample_events(refined_server, body)  # handover_scale 0: the model alone
    assert [a.tobytes() for a in unused] == [b.tobytes() for b in alone]
    previews, images, done = sample_events(refined_server, {**body, "handover_scale": 2})
    assert np.array_equal(np.array(previews[:2]), np.array(alone_previews[:2])), "the model drafts scales 0 and 1"
    assert all(a.tobytes() != b.tobytes() for a, b in zip(images, alone)), "the refiner changed nothing"
    assert done["settings"]["refiner"] == str(refiner_dir) and done["settings"]["handover_scale"] == 2
    argv = shlex.split(done["command"])
    assert argv[argv.index("--refiner") + 1] == str(refiner_dir.resolve())
    assert argv[argv.index("--handover-scale") + 1] == "2"
    argv[argv.index("--out") + 1] = str(tmp_path / "grid.png")
    assert run_cli(argv[1:], monkeypatch) == 0
    expected = make_grid(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 255.0, columns=2, upscale=16)
    with Image.open(tmp_path / "grid.png") as written:
        assert np.array_equal(np.array(written.convert("RGB")), np.array(expected))
    status, _, content = request(refined_server.url + "api/sample", {"classes": [0], "handover_scale": 5})
    assert status == 400 and "handover_scale must be an integer in [0, 4], got 5" in json.loads(content)["error"]


def test_edits_use_the_model_alone(server, refined_server):
    """Editing has no refiner: with one loaded, the edits are the model's own and their command line loads none."""
    info = json.loads(request(server.url + "api/info")[2])
    body = {"image": info["examples"][6]["image"], "region": region((0, 1), (2, 2)), "samples": 2, "seed": 3}
    alone = events(server.url + "api/edit", body)[-1]
    refined = events(refined_server.url + "api/edit", body)[-1]
    assert refined["images"] == alone["images"]
    assert "--refiner" not in refined["command"] and refined["command"] == alone["command"]


def test_model_source_flags_and_refusals(model_dir, refiner_dir, tmp_path):
    source = ModelSource(model=str(model_dir), refiner=str(refiner_dir))
    assert source.cli_flags() == ["--model", str(model_dir.resolve()), "--refiner", str(refiner_dir.resolve()),
                                  "--device", "cpu"]  # fmt: skip
    assert source.cli_flags(refiner=False) == ["--model", str(model_dir.resolve()), "--device", "cpu"]
    tokenizer_only = write_debug_tokenizer(tmp_path / "tokenizer-only")
    tokenizer, _ = debug_pair()
    other_classes = nextscale.save_pretrained(tmp_path / "five-classes", tokenizer, debug_pair(num_classes=5)[1])
    refusals = {
        tokenizer_only: (nextscale.UsageError, "it holds no transformer/"),
        str(tmp_path / "missing"): (FileNotFoundError, "refiner model directory not found"),
        str(other_classes): (nextscale.UsageError, "the refiner has 5 classes, the model 10"),
    }
    for refiner, (error, message) in refusals.items():
        with pytest.raises(error, match=re.escape(message)):
            ModelSource(model=str(model_dir), refiner=refiner).load()


def test_demo_command_and_run_demo_load_the_refiner(model_dir, refiner_dir, monkeypatch):
    """`nextscale demo --refiner DIR` and `run_demo(refiner=DIR)` serve an engine whose model hands over to it."""
    served = []
    monkeypatch.setattr(demo_server, "serve", lambda engine, *args, **kwargs: served.append(engine))
    argv = ["demo", "--model", str(model_dir), "--refiner", str(refiner_dir), "--device", "cpu", "--port", "0"]
    assert run_cli(argv, monkeypatch) == 0
    run_demo(str(model_dir), port=0, refiner=str(refiner_dir))
    for engine in served:
        assert engine.source.refiner == str(refiner_dir) and engine.info()["refiner"] == str(refiner_dir)
        refiner = engine.model.pipeline.refiner
        assert refiner is not None and refiner is not engine.model.pipeline.model
        assert torch.equal(refiner.pos_embed, debug_pair(1)[1].pos_embed)
    assert len(served) == 2


def test_the_demo_quantizes_with_quantize_int8(model_dir, refiner_dir, monkeypatch):
    """`nextscale demo --quantize int8` and `run_demo(quantize="int8")` quantise both transformers, and the page's
    command lines carry the flag so that `nextscale sample` reproduces the same (int8) draws."""
    from nextscale.quantization import is_quantized

    served = []
    monkeypatch.setattr(demo_server, "serve", lambda engine, *args, **kwargs: served.append(engine))
    argv = ["demo", "--model", str(model_dir), "--refiner", str(refiner_dir), "--quantize", "int8", "--port", "0"]
    assert run_cli(argv, monkeypatch) == 0
    run_demo(str(model_dir), port=0, refiner=str(refiner_dir), quantize="int8")
    for engine in served:
        pipeline = engine.model.pipeline
        assert is_quantized(pipeline.model.blocks[0].mlp.fc1) and is_quantized(pipeline.refiner.blocks[0].mlp.fc1)
        assert "--quantize" in engine.source.cli_flags() and "int8" in engine.source.precision
    assert len(served) == 2
    assert "--quantize" not in ModelSource(model=str(model_dir)).cli_flags()
