"""`nextscale eval-samples` and `train-classifier` as a user meets them: the Fashion-MNIST path from the shipped weights
end to end (table, JSON, cached reference), and one line with exit status 2 for each bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch_fidelity")

from conftest import write_fashion_files  # noqa: E402

from nextscale.cli.common import OneLineParser, UsageError  # noqa: E402
from nextscale.cli.evaluation import add_commands  # noqa: E402
from nextscale.data.fashion_mnist import DEFAULT_FASHION_MNIST_ROOT, FashionMNIST  # noqa: E402
from nextscale.weights import CheckpointError  # noqa: E402

HAS_FASHION_MNIST = DEFAULT_FASHION_MNIST_ROOT.is_dir()
REQUIRED_KEYS = ("fid", "inception_score", "kid", "precision", "recall", "class_accuracy", "num_samples", "features")


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Parse with a fresh parser holding only these commands and run the command the way `nextscale.cli.main` does:
    a user error is one line on stderr and exit status 2. Returns (status, stdout, stderr)."""
    parser = OneLineParser(prog="nextscale")
    add_commands(parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser))
    try:
        args = parser.parse_args(argv)
        args.func(args)
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    except (UsageError, CheckpointError, FileNotFoundError, ValueError) as err:
        print(f"nextscale {argv[0]}: error: {err}", file=sys.stderr)
        status = 2
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def write_pngs(folder: Path, images_NHW3: np.ndarray, labels_N: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for row, (image, label) in enumerate(zip(images_NHW3, labels_N)):
        Image.fromarray(image).save(folder / f"class{int(label):04d}_seed0000000_row{row:04d}.png")
    return folder


@pytest.mark.skipif(not HAS_FASHION_MNIST, reason=f"{DEFAULT_FASHION_MNIST_ROOT} missing")
def test_eval_samples_on_real_images_with_the_shipped_classifier(tmp_path, capsys):
    """The issue's command: training images as 'samples' against the 10k test split give a high class accuracy,
    precision and recall, and a small FID; the table is printed and the JSON written."""
    train = FashionMNIST("train", 32)
    pick = np.random.default_rng(0).choice(len(train), 300, replace=False)
    gray = np.repeat(train.images_NSS[pick].numpy()[..., None], 3, -1)
    samples = write_pngs(tmp_path / "samples", gray, train.labels_N[pick].numpy())
    out = tmp_path / "out" / "metrics.json"
    argv = ["eval-samples", "--samples", str(samples), "--reference", "fashion-mnist:test", "--features", "fmnist"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--json", str(out), "--no-progress", "--device", "cpu"]
    status, stdout, stderr = run_cli(argv, capsys)
    assert status == 0, stderr
    result = json.loads(out.read_text())
    assert all(key in result for key in REQUIRED_KEYS)
    assert result["num_samples"] == 300 and result["num_reference"] == 10_000 and result["features"] == "fmnist"
    assert result["class_accuracy"] > 0.9
    assert result["precision"] > 0.6 and result["recall"] > 0.3  # 300 samples cover part of the test manifold
    assert result["fid"] < 5 and 5 < result["inception_score"] <= 10
    assert "FID" in stdout and "class accuracy" in stdout and str(out) in stdout
    assert not result["reference_from_cache"] and Path(result["reference_cache_file"]).is_file()


@pytest.mark.skipif(not HAS_FASHION_MNIST, reason=f"{DEFAULT_FASHION_MNIST_ROOT} missing")
def test_eval_samples_takes_a_builtin_split_as_samples(tmp_path, capsys):
    """`--samples fashion-mnist:train` (the floor row) reads real images like a reference does: with the same 300
    test images stored as both splits, FID is 0 up to rounding, precision and recall are 1, and class accuracy is
    the shipped classifier's."""
    real = FashionMNIST("test", 28)
    images_NHW, labels_N = real.images_NSS[:300].numpy(), real.labels_N[:300].numpy().astype(np.uint8)
    for split in ("train", "t10k"):
        write_fashion_files(tmp_path / "root", split, images_NHW, labels_N)
    argv = ["eval-samples", "--samples", "fashion-mnist:train", "--reference", "fashion-mnist:test", "--no-progress"]
    argv += ["--data-root", str(tmp_path / "root"), "--cache-dir", str(tmp_path / "cache")]
    argv += ["--json", str(tmp_path / "m.json"), "--device", "cpu"]
    status, _, stderr = run_cli(argv, capsys)
    assert status == 0, stderr
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["num_samples"] == 300 and abs(result["fid"]) < 1e-3
    assert result["precision"] == result["recall"] == 1.0 and result["class_accuracy"] > 0.85


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (32, 32)).save(mixed / "a.png")
    Image.new("RGB", (28, 28)).save(mixed / "b.png")
    float_npz = tmp_path / "floats.npz"
    np.savez(float_npz, arr_0=np.zeros((4, 32, 32, 3), np.float32))
    good = tmp_path / "good"
    good.mkdir()
    for index in range(6):
        Image.new("RGB", (32, 32), (index * 40, 0, 0)).save(good / f"class0001_seed0000000_row{index:04d}.png")
    return {
        "missing": (["--samples", str(tmp_path / "nowhere")], "not found"),
        "empty": (["--samples", str(empty)], "holds no images"),
        "mixed sizes": (["--samples", str(mixed)], "mixes image sizes"),
        "float npz": (["--samples", str(float_npz)], "must be uint8"),
        "unknown reference split": (["--samples", str(good), "--reference", "fashion-mnist:val"], "unknown reference"),
        "missing reference": (["--samples", str(good), "--reference", str(tmp_path / "no.npz")], "not found"),
        "inception weights without inception": (
            ["--samples", str(good), "--inception-weights", str(tmp_path / "w.pth")],
            "--inception-weights needs --features inception",
        ),
        "classifier weights with inception": (
            ["--samples", str(good), "--features", "inception", "--classifier-weights", str(tmp_path / "c.st")],
            "--classifier-weights needs --features fmnist",
        ),
        "missing classifier weights": (
            ["--samples", str(good), "--classifier-weights", str(tmp_path / "c.safetensors")],
            "not found",
        ),
        "missing inception weights": (
            ["--samples", str(good), "--features", "inception", "--inception-weights", str(tmp_path / "w.pth")],
            "--inception-weights",
        ),
        "no samples flag": ([], "--samples is required"),
        "unknown features": (["--samples", str(good), "--features", "vgg"], "invalid choice"),
        "bad batch size": (["--samples", str(good), "--batch-size", "0"], "--batch-size must be positive"),
    }


def test_eval_samples_bad_inputs_give_one_line_and_status_2(tmp_path, capsys):
    for case, (flags, expected) in _bad_inputs(tmp_path).items():
        status, stdout, stderr = run_cli(["eval-samples", "--no-progress", *flags], capsys)
        assert status == 2, (case, stderr)
        assert len(stderr.strip().splitlines()) == 1, (case, stderr)
        assert expected in stderr, (case, stderr)
        assert "Traceback" not in stderr


def test_train_classifier_refuses_a_bad_output_before_training(tmp_path, capsys):
    status, _, stderr = run_cli(["train-classifier", "--out", str(tmp_path / "weights.pt")], capsys)
    assert status == 2 and "name a .safetensors file" in stderr and len(stderr.strip().splitlines()) == 1
    status, _, stderr = run_cli(["train-classifier", "--epochs", "many"], capsys)
    assert status == 2 and "'many' is not a" in stderr and len(stderr.strip().splitlines()) == 1
    status, _, stderr = run_cli(["train-classifier", "--epochs", "0", "--out", str(tmp_path / "w.safetensors")], capsys)
    assert status == 2 and "epochs and batch_size must be positive" in stderr
    assert not (tmp_path / "w.safetensors").exists()
