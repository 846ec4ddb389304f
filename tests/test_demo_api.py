"""The demo's HTTP API against a real server on a loopback port (no browser): the page's facts, the streamed events,
the images and their reproduction from the command line the page shows, and a clear 4xx for every kind of bad
request. The model and server: tests/demo_support.py."""

from __future__ import annotations

import base64
import http.client
import json
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

import pytest

pytest.importorskip("starlette", reason="the demo extra is not installed (pip install 'nextscale[demo]')")
pytest.importorskip("uvicorn", reason="the demo extra is not installed (pip install 'nextscale[demo]')")

import demo_support  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from demo_support import (  # noqa: E402
    CLASSES,
    REPO,
    data_url,
    events,
    picture,
    region,
    request,
    run_cli,
    write_png,
)
from PIL import Image  # noqa: E402

import nextscale  # noqa: E402
from nextscale.demo.examples import examples_from_metadata  # noqa: E402
from nextscale.images import make_grid  # noqa: E402

model_dir, server = demo_support.model_dir, demo_support.server  # the shared module-scoped fixtures

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
