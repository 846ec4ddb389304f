"""Serving the demo: loopback by default, the `nextscale demo` command (until interrupted; one-line errors), the
official checkpoints and the shipped models by name, and the core without the demo extra."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the demo extra is not installed (pip install 'nextscale[demo]')")
pytest.importorskip("uvicorn", reason="the demo extra is not installed (pip install 'nextscale[demo]')")

import demo_support  # noqa: E402
from conftest import ASSETS  # noqa: E402
from demo_support import (  # noqa: E402
    REPO,
    events,
    picture,
    request,
    run_cli,
)

import nextscale  # noqa: E402
from nextscale import cli  # noqa: E402
from nextscale.cli import demo as demo_cli  # noqa: E402
from nextscale.demo.model import ModelSource  # noqa: E402
from nextscale.demo.server import DEFAULT_HOST, DEFAULT_PORT, run_demo, start_demo  # noqa: E402
from nextscale.model.raster import RasterTransformer, raster_preset  # noqa: E402
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset  # noqa: E402

model_dir, server = demo_support.model_dir, demo_support.server  # the shared module-scoped fixtures

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
