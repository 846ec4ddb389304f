"""`nextscale edit` and `nextscale sample-set` end to end on a saved debug model: the files they write, and one clear
error line with exit status 2 for each bad input."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from conftest import debug_pair
from PIL import Image

from nextscale import save_pretrained
from nextscale.cli import main
from nextscale.sampling import SAMPLING_PRESETS


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved debug model (8-px images, 10 classes) and input pictures."""
    root = tmp_path_factory.mktemp("cli")
    tokenizer, model = debug_pair(seed=2)
    save_pretrained(root / "model", tokenizer, model)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "input.png")
    Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)).save(root / "wide.png")  # 20×12
    Image.new("L", (10, 6), 255).save(root / "mask_10x6.png")
    Image.new("L", (16, 16), 0).save(root / "mask_black.png")
    left_half = Image.new("L", (20, 12), 0)
    left_half.paste(255, (0, 0, 10, 12))
    left_half.save(root / "mask_wide.png")
    (root / "broken.png").write_bytes(b"not a picture")
    return root


def _edit(files, *extra: str) -> list[str]:
    return ["edit", "--model", str(files / "model"), "--device", "cpu", "--image", str(files / "input.png"), *extra]


def test_edit_writes_the_results_and_the_strip(files, tmp_path, capsys):
    out = tmp_path / "out" / "result.png"
    argv = _edit(files, "--box", "0.25", "0.25", "0.75", "0.75", "--samples", "2", "--seed", "3", "--out", str(out))
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = [tmp_path / "out" / f"result_{i}.png" for i in range(2)]
    strip = tmp_path / "out" / "result_strip.png"
    assert all(str(path) in printed for path in [*results, strip])
    assert all(Image.open(path).size == (8, 8) for path in results)
    assert Image.open(strip).size == (4 * 130 + 2, 132)  # input, mask, two results, enlarged 16×


def test_edit_resizes_another_size_and_says_so(files, tmp_path, capsys):
    out = tmp_path / "wide_result.png"
    argv = _edit(
        files, "--mask", str(files / "mask_wide.png"), "--mode", "class-edit", "--class", "4", "--out", str(out)
    )
    argv[argv.index(str(files / "input.png"))] = str(files / "wide.png")
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "wide.png is 20×12; centre-cropped to a square and resized to 8×8" in captured.err
    assert Image.open(out).size == (8, 8) and (tmp_path / "wide_result_strip.png").is_file()


BAD_EDITS = [
    (["--box", "0", "0", "0.05", "0.05"], "nothing to regenerate"),  # rounds to no token of the 4×4 grid
    (["--mode", "outpaint", "--box", "0", "0", "1", "1"], "nothing to regenerate"),
    (["--mode", "outpaint", "--box", "0", "0", "0.05", "0.05"], "nothing kept"),
    (["--mask", "{files}/mask_black.png"], "nothing to regenerate"),
    (["--mask", "{files}/mask_10x6.png"], "the mask is 10×6; it must be square or 8×8"),
    (["--mask", "{files}/broken.png"], "is not a readable image"),
    (["--mask", "{files}/absent.png"], "image not found"),
    (["--box", "0", "0", "0.5", "0.5", "--class", "10"], r"class 10 is outside [0, 10)"),
    (["--box", "0", "0", "0.5", "0.5", "--mode", "class-edit"], "--mode class-edit needs --class K"),
    (["--box", "-0.1", "0", "0.5", "0.5"], "coordinates are fractions in [0, 1] with y0 < y1"),
    (["--box", "0", "0", "0.5", "1.5"], "coordinates are fractions in [0, 1] with x0 < x1"),
    (["--box", "0.5", "0", "0.5", "1"], "y0=0.5, y1=0.5"),
    ([], "give the region to edit with --box Y0 X0 Y1 X1 or with --mask"),
    (["--box", "0", "0", "0.5", "0.5", "--mask", "{files}/mask_wide.png"], "(one of them)"),
    (["--box", "0", "0", "0.5", "0.5", "--samples", "0"], "--samples must be positive"),
    (["--box", "0", "0", "0.5", "0.5", "--out", "{files}/result"], "name an image file"),
]


@pytest.mark.parametrize("extra, message", BAD_EDITS, ids=[m for _, m in BAD_EDITS])
def test_bad_edit_inputs_give_one_error_line_and_exit_2(files, tmp_path, capsys, extra, message):
    argv = _edit(files, "--out", str(tmp_path / "r.png"), *[a.format(files=files) for a in extra])
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nextscale edit: error: ") and message in lines[0], lines
    assert not list(tmp_path.iterdir())


def test_bad_image_path(files, capsys):
    argv = _edit(files, "--box", "0", "0", "0.5", "0.5")
    argv[argv.index(str(files / "input.png"))] = str(files / "nowhere.png")
    with pytest.raises(SystemExit):
        main(argv)
    assert "nextscale edit: error: image not found" in capsys.readouterr().err


def _sample_set(files, out, *extra: str) -> list[str]:
    return [
        "sample-set",
        "--model",
        str(files / "model"),
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def test_sample_set_writes_pngs_settings_and_npz_and_resumes(files, tmp_path, capsys):
    out = tmp_path / "fid"
    argv = _sample_set(files, out, "--per-class", "2", "--classes", "0-2", "--batch-size", "4", "--seed", "1")
    assert main(argv) == 0
    assert "6 images" in capsys.readouterr().out
    assert len(list(out.glob("class*.png"))) == 6
    settings = json.loads((out / "settings.json").read_text())
    assert settings["sampling"] == asdict(SAMPLING_PRESETS["fid"])  # the default preset of sample-set
    assert settings["model"] == str(files / "model") and settings["classes"] == [0, 1, 2]
    with np.load(tmp_path / "fid.npz") as packed:
        first = packed["arr_0"]
    assert first.shape == (6, 8, 8, 3) and first.dtype == np.uint8
    (out / sorted(p.name for p in out.glob("*.png"))[-1]).unlink()
    assert main(argv) == 0  # resume: only the batch of the lost PNG is made again
    assert "rank 0 found 4, wrote 2" in capsys.readouterr().out
    with np.load(tmp_path / "fid.npz") as packed:
        assert np.array_equal(packed["arr_0"], first)


BAD_SETS = [
    (["--classes", "5-3"], "bad class list '5-3'"),
    (["--classes", "0-10"], r"class 10 is outside [0, 10)"),
    (["--per-class", "0"], "per_class must be positive"),
    (["--batch-size", "0"], "batch_size must be in"),
    (["--classes", "1,1"], "classes repeat"),
]


@pytest.mark.parametrize("extra, message", BAD_SETS, ids=[m for _, m in BAD_SETS])
def test_bad_sample_set_inputs_give_one_error_line_and_exit_2(files, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        main(_sample_set(files, tmp_path / "set", *extra))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nextscale sample-set: error: ") and message in lines[0], lines


def test_sample_set_refuses_to_resume_with_another_batch_size(files, tmp_path, capsys):
    out = tmp_path / "set"
    assert main(_sample_set(files, out, "--per-class", "1", "--classes", "0-1", "--batch-size", "2")) == 0
    with pytest.raises(SystemExit):
        main(_sample_set(files, out, "--per-class", "1", "--classes", "0-1", "--batch-size", "1"))
    assert "made with other settings (batch_size: 2 → 1)" in capsys.readouterr().err


def test_sample_with_a_refiner_hands_over_at_the_given_scale(tmp_path, make_debug_pair):
    """`nextscale sample --model A --refiner B --handover-scale 2`: A drafts the first two scales, B draws the rest;
    without --handover-scale the refiner is never used."""
    from nextscale import cli, save_pretrained

    tokenizer, drafter = make_debug_pair(0)
    _, refiner = make_debug_pair(1)
    save_pretrained(tmp_path / "a", tokenizer, drafter)
    save_pretrained(tmp_path / "b", tokenizer, refiner)
    base = ["sample", "--model", str(tmp_path / "a"), "--class", "1", "--seed", "0", "--preset", "fid"]
    for name, extra in (("alone", []), ("refined", ["--refiner", str(tmp_path / "b"), "--handover-scale", "2"]),
                        ("unused", ["--refiner", str(tmp_path / "b")])):  # fmt: skip
        assert cli.main([*base, *extra, "--out", str(tmp_path / f"{name}.png")]) == 0
    pictures = {name: (tmp_path / f"{name}.png").read_bytes() for name in ("alone", "refined", "unused")}
    assert pictures["alone"] == pictures["unused"] != pictures["refined"]
