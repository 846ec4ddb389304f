"""The demo with a second model: collaborative decoding (a refiner draws the scales from the request's handover_scale
on; edits use the model alone), how a refiner is named and refused, and int8 quantisation of both."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the demo extra is not installed (pip install 'nextscale[demo]')")
pytest.importorskip("uvicorn", reason="the demo extra is not installed (pip install 'nextscale[demo]')")

import demo_support  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from conftest import debug_pair, write_debug_tokenizer  # noqa: E402
from demo_support import (  # noqa: E402
    events,
    picture,
    region,
    request,
    run_cli,
)
from PIL import Image  # noqa: E402

import nextscale  # noqa: E402
from nextscale.demo import server as demo_server  # noqa: E402
from nextscale.demo.model import ModelSource  # noqa: E402
from nextscale.demo.server import run_demo, start_demo  # noqa: E402
from nextscale.images import make_grid  # noqa: E402

model_dir, server = demo_support.model_dir, demo_support.server  # the shared module-scoped fixtures

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
