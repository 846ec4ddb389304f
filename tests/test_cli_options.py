"""The command line: every config field has its flag (generated, so flags cannot drift from the configs), values
layer defaults < recipe < flags, and each user mistake gives one line on stderr and exit status 2, before any work."""

from __future__ import annotations

import argparse
import dataclasses
import os
import stat

import pytest
import torch
from conftest import debug_pair

from nextscale import cli, save_pretrained
from nextscale.cli.options import field_comments, flag_of
from nextscale.data.build import DataConfig
from nextscale.model.config import VARConfig
from nextscale.sampling import SAMPLING_PRESETS, SamplingSettings
from nextscale.tokenizer.tokenizer import TokenizerConfig
from nextscale.train.loop import LoopConfig
from nextscale.train.recipes import VAR_RECIPES
from nextscale.train.tokenizer_task import TokenizerTrainConfig
from nextscale.train.var_task import VARTrainConfig

RENAMES = {"output_dir": "--out", "name": "--data", "root": "--data-root"}


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def fields(config_class, exclude=()) -> list[str]:
    return [f.name for f in dataclasses.fields(config_class) if f.name not in exclude]


@pytest.mark.parametrize(
    ("command", "configs"),
    [
        ("train", [(LoopConfig, ()), (DataConfig, ("seed",)), (VARTrainConfig, ("data", "model")),
                   (VARConfig, ("num_classes",))]),
        ("train-tokenizer", [(LoopConfig, ()), (DataConfig, ("seed",)), (TokenizerTrainConfig, ("data", "tokenizer")),
                             (TokenizerConfig, ())]),
        ("sample", [(SamplingSettings, ())]),
        ("edit", [(SamplingSettings, ())]),
        ("sample-set", [(SamplingSettings, ())]),
    ],
)  # fmt: skip
def test_every_config_field_has_a_flag(command, configs):
    """Each field (apart from the few a command sets itself: the run's one seed, the classes of the data, the
    nested configs) is reachable from the command line under its own name."""
    available = flags(subcommand(command))
    for config_class, exclude in configs:
        for name in fields(config_class, exclude):
            assert flag_of(name, RENAMES) in available, f"{command}: {config_class.__name__}.{name} has no flag"


def test_no_flags_give_the_configs_defaults_under_the_default_recipe(tmp_path, monkeypatch):
    """`nextscale train` with no flags builds exactly LoopConfig/DataConfig/VARTrainConfig from their defaults
    with the default recipe on top: the help's defaults are what runs."""
    built = {}

    def fake_run(task, loop):
        built.update(loop=loop, task=task.config)
        return tmp_path

    monkeypatch.setattr("nextscale.train.loop.run", fake_run)
    (tmp_path / "tok").mkdir()
    assert cli.main(["train", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "run")]) == 0
    recipe = VAR_RECIPES["fmnist-small"]
    expected_loop = LoopConfig(**{**recipe.loop, "output_dir": str(tmp_path / "run")})
    assert built["loop"] == expected_loop
    data = DataConfig(**recipe.data, seed=expected_loop.seed)
    assert built["task"] == VARTrainConfig(tokenizer=str(tmp_path / "tok"), **recipe.task, data=data, model={})


def test_recipes_layer_under_the_flags(tmp_path, monkeypatch):
    built = {}
    monkeypatch.setattr("nextscale.train.loop.run", lambda task, loop: built.update(loop=loop, task=task.config))
    (tmp_path / "tok").mkdir()
    base = ["train", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "run"), "--recipe", "var-d24"]
    cli.main(base)
    assert built["task"].model == {"init_adaln_gamma_scale": 1e-4}  # the recipe's gamma init reaches the model
    assert built["task"].preset == "var-d24" and built["loop"].base_lr == 8e-5 and built["loop"].batch_size == 768
    assert built["loop"].final_lr_ratio == 0.01 and built["task"].data.image_size == 256
    cli.main([*base, "--init-adaln-gamma-scale", "0.002", "--batch-size", "64", "--depth", "4"])
    assert built["task"].model == {"init_adaln_gamma_scale": 0.002, "depth": 4} and built["loop"].batch_size == 64


def test_field_comments_are_the_help():
    assert field_comments(SamplingSettings)["cfg"].startswith("guidance at the last scale")
    help_text = subcommand("sample").format_help()
    assert "guidance at the last scale" in help_text and "(default: 4.0)" in help_text  # the demo preset's cfg


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tokenizer, model = debug_pair(seed=3)
    return save_pretrained(tmp_path_factory.mktemp("cli") / "model", tokenizer, model)


def one_error_line(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--cfg", "nan"], "argument --cfg: 'nan' is not a finite number"),
        (["--cfg", "-1"], "cfg must be a finite number ≥ 0"),
        (["--top-k", "many"], "argument --top-k: 'many' is not an integer"),
        (["--seed", "-3"], "--seed must be in [0, 2^63)"),
        (["--seed", str(2**64)], "--seed must be in [0, 2^63)"),
        (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "nope"], "--device"),
        (["--class", "10"], "--class 10 is outside [0, 10)"),
        (["--per-class", "0"], "--per-class must be positive"),
        (["--preset", "sharpest"], "argument --preset: invalid choice: 'sharpest'"),
    ],
)
def test_bad_sampling_flags(model_dir, tmp_path, capsys, extra, message):
    line = one_error_line(["sample", "--model", str(model_dir), "--out", str(tmp_path / "g.png"), *extra], capsys)
    assert message in line and line.startswith("nextscale sample")


def test_output_paths_are_checked_before_any_work(model_dir, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    (tmp_path / "folder.png").mkdir()
    cases = [
        (str(a_file / "grid.png"), "is a file, not a folder"),
        (str(tmp_path / "folder.png"), "a folder is in the way"),
        (str(tmp_path / "grid.gif2"), "name an image file"),
    ]
    for out, message in cases:
        # a model directory that does not exist: the output path must be refused before it is even looked at
        line = one_error_line(["sample", "--model", str(tmp_path / "absent"), "--out", out], capsys)
        assert message in line, line
    line = one_error_line(["sample-set", "--model", str(model_dir), "--out", str(a_file)], capsys)
    assert "a file is in the way" in line
    line = one_error_line(["train", "--out", str(a_file / "run"), "--tokenizer", str(model_dir)], capsys)
    assert "is a file, not a folder" in line


def write_model(tmp_path, name="m"):
    tokenizer, model = debug_pair(seed=1)
    return save_pretrained(tmp_path / name, tokenizer, model)


DAMAGES = {
    "empty weights": (
        lambda d: (d / "transformer/model.safetensors").write_bytes(b""),
        "transformer/model.safetensors",
    ),
    "truncated weights": (lambda d: _truncate(d / "tokenizer/model.safetensors"), "tokenizer/model.safetensors is"),
    "config not JSON": (lambda d: (d / "tokenizer/config.json").write_text("{x"), "tokenizer/config.json is not valid"),
    "empty config": (lambda d: (d / "transformer/config.json").write_text(""), "transformer/config.json is not valid"),
    "wrong type": (lambda d: _edit_json(d / "tokenizer/config.json", vocab_size="many"), "vocab_size must be an int"),
    "float depth": (lambda d: _edit_json(d / "transformer/config.json", config={"depth": 2.5}), "depth must be an int"),
    "no token space": (lambda d: _edit_json(d / "transformer/config.json", token_space=None), "missing token_space"),
    "newer format": (lambda d: _edit_json(d / "nextscale.json", format_version=99), "is format 99; this nextscale"),
    "missing config": (lambda d: (d / "transformer/config.json").unlink(), "file missing"),
}


@pytest.mark.parametrize(("damage", "message"), DAMAGES.values(), ids=DAMAGES.keys())
def test_damaged_model_directories_give_one_line_everywhere(tmp_path, capsys, damage, message):
    """from_pretrained, Pipeline and `sample --model` all say which file is wrong, in one line."""
    from nextscale import Pipeline, from_pretrained

    directory = write_model(tmp_path)
    damage(directory)
    with pytest.raises((ValueError, FileNotFoundError), match=message.split(" ")[-1]):
        from_pretrained(directory)
    with pytest.raises((ValueError, FileNotFoundError)):
        Pipeline.from_pretrained(directory)
    line = one_error_line(["sample", "--model", str(directory), "--out", str(tmp_path / "g.png")], capsys)
    assert message in line and "\n" not in line
    line = one_error_line(["train", "--tokenizer", str(directory), "--out", str(tmp_path / "run")], capsys)
    assert line.startswith("nextscale train: error:")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_json(path, **changes):
    import json

    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_exported_model_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        directory = write_model(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
    for path in directory.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) == (0o755 if path.is_dir() else 0o644), path


def test_labels_outside_the_model_and_float_labels_are_refused(model_dir):
    from nextscale import from_pretrained, generate

    tokenizer, model = from_pretrained(model_dir)
    with pytest.raises(ValueError, match="class 99 is outside"):
        generate(model, tokenizer, 99, seed=0)
    with pytest.raises(ValueError, match="integer classes, got 1.5"):
        generate(model, tokenizer, [1, 1.5], seed=0)
    with pytest.raises(ValueError, match="integer classes, got a torch.float32 tensor"):
        generate(model, tokenizer, torch.tensor([1.0, 2.0]), seed=0)
    with pytest.raises(ValueError, match="integer class, got 2.0|integer classes, got 2.0"):
        generate(model, tokenizer, 2.0, seed=0)
    out = generate(model, tokenizer, torch.tensor([3, 10]), seed=0)  # 10 = the null class: allowed
    assert out.labels.tolist() == [3, 10]
    with pytest.raises(ValueError, match="seed must be an integer"):
        generate(model, tokenizer, 1, seed=-1)


def test_sampling_settings_are_validated():
    with pytest.raises(ValueError, match="cfg must be a finite number"):
        SamplingSettings(cfg=float("nan"))
    with pytest.raises(ValueError, match="cfg must be a finite number"):
        SamplingSettings(cfg=-0.5)
    with pytest.raises(ValueError, match="top_k must be an integer"):
        SamplingSettings(top_k=2.5)
    with pytest.raises(TypeError, match="unknown sampling settings"):
        SamplingSettings.resolve("fid", temperature=0.5)
    assert SamplingSettings.resolve("fid", cfg=2.0) == dataclasses.replace(SAMPLING_PRESETS["fid"], cfg=2.0)


def test_each_field_comment_sits_on_its_field_line():
    """A field whose line the formatter had to wrap loses its comment as help: keep them on one line."""
    import inspect

    from nextscale.model.raster import RasterConfig
    from nextscale.tokenizer.tokenizer import TokenizerConfig

    for config_class in (LoopConfig, DataConfig, VARTrainConfig, TokenizerTrainConfig, VARConfig, RasterConfig,
                         TokenizerConfig, SamplingSettings):  # fmt: skip
        wrapped = [line for line in inspect.getsource(config_class).splitlines() if line.rstrip().endswith("= (")]
        assert not wrapped, f"{config_class.__name__}: {wrapped}"


def test_a_flag_of_the_other_architecture_is_refused(tmp_path, capsys):
    (tmp_path / "tok").mkdir()
    line = one_error_line(["train", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "r"),
                           "--architecture", "raster", "--shared-adaln"], capsys)  # fmt: skip
    assert "--shared-adaln is not a setting of the raster architecture" in line


def test_perceptual_weights_command_writes_a_file_the_loss_loads(tmp_path, capsys):
    torchvision = pytest.importorskip("torchvision", reason="the VGG16 layout comes from torchvision")
    pytest.importorskip("lpips", reason="the LPIPS linear layers come from the lpips package")
    from nextscale.tokenizer.losses import PerceptualLoss

    torch.save(torchvision.models.vgg16(weights=None).state_dict(), tmp_path / "vgg16.pth")
    out = tmp_path / "weights" / "lpips_vgg.pth"
    assert cli.main(["perceptual-weights", "--out", str(out), "--vgg", str(tmp_path / "vgg16.pth")]) == 0
    loss = PerceptualLoss(out)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert loss(images, images).item() == 0.0 and loss(images, images.flip(-1)).item() > 0
    line = one_error_line(["perceptual-weights", "--out", str(tmp_path), "--vgg", str(tmp_path / "vgg16.pth")], capsys)
    assert "is a directory" in line
