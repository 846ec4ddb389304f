"""Bad inputs to training get a clear message; unreadable images are skipped and counted while training goes on.

Runs use the `debug` presets (8 px images) on CPU in fp32; the CLI cases go through `nextscale.cli.main` (exit status
2 and one line on stderr), and the missing tokenizer through a real `python -m nextscale.cli` process.
"""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_debug_tokenizer
from PIL import Image

from nextscale import cli
from nextscale.data.build import DataConfig
from nextscale.train.checkpoint import CheckpointManager
from nextscale.train.loop import LoopConfig, NonFiniteLossError, run
from nextscale.train.tokenizer_task import TokenizerTask, TokenizerTrainConfig
from nextscale.train.var_task import VARTask, VARTrainConfig

REPOSITORY = Path(__file__).resolve().parents[1]


def loop_config(output_dir: Path, **overrides) -> LoopConfig:
    settings = dict(
        output_dir=str(output_dir),
        steps=4,
        batch_size=4,
        base_lr=0.01,
        precision="fp32",
        log_every=1,
        eval_every=0,
        eval_batches=1,
        save_every=1000,
        progress=False,
    )
    return LoopConfig(**{**settings, **overrides})


def procedural(image_size: int = 8) -> DataConfig:
    return DataConfig(name="procedural", image_size=image_size, num_samples=16)


def write_image(path: Path, seed: int, size: tuple[int, int] = (12, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def cli_error(arguments: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the CLI in this process; it must exit with status 2 and print exactly one line to stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def train_tokenizer_arguments(data: Path, output_dir: Path) -> list[str]:
    return ["train-tokenizer", "--data", str(data), "--image-size", "8", "--preset", "debug", "--out",
            str(output_dir), "--steps", "2", "--batch-size", "4", "--precision", "fp32", "--no-progress"]  # fmt: skip


# --------------------------------------------------------------------------------------------------- image folders


def test_unreadable_and_truncated_images_are_skipped_and_counted(tmp_path: Path):
    folder = tmp_path / "images"
    for index in range(6):
        write_image(folder / ("cat" if index % 2 else "dog") / f"{index}.png", seed=index)
    encoded = io.BytesIO()
    Image.fromarray(np.full((10, 12, 3), 200, dtype=np.uint8)).save(encoded, format="PNG")
    truncated, garbage = folder / "cat" / "truncated.png", folder / "dog" / "garbage.jpg"
    truncated.write_bytes(encoded.getvalue()[: len(encoded.getvalue()) // 2])
    garbage.write_bytes(b"not an image at all")

    task = TokenizerTask(TokenizerTrainConfig(preset="debug", data=DataConfig(name=str(folder), image_size=8)))
    export = run(task, loop_config(tmp_path / "run", steps=4))  # 4 batches of 4: every file is met at least once
    assert (export / "tokenizer" / "model.safetensors").is_file()
    assert task.dataset.skipped_files == 2  # the final evaluation reads the same folder and keeps its own count
    log = (tmp_path / "run" / "train.log").read_text()
    for path in (truncated, garbage):
        assert f"skipping unreadable image {path}" in log


def test_an_empty_image_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture):
    (tmp_path / "empty" / "cats").mkdir(parents=True)
    (tmp_path / "empty" / "dogs").mkdir()
    message = cli_error(train_tokenizer_arguments(tmp_path / "empty", tmp_path / "run"), capsys)
    assert message.startswith("nextscale train-tokenizer: error: no images")
    assert str(tmp_path / "empty") in message


def test_a_single_class_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture):
    for index in range(3):
        write_image(tmp_path / "one" / "cat" / f"{index}.png", seed=index)
    message = cli_error(train_tokenizer_arguments(tmp_path / "one", tmp_path / "run"), capsys)
    assert "only 1 class" in message and "at least two classes" in message and str(tmp_path / "one") in message


# ------------------------------------------------------------------------------------------ tokenizer and transformer


def test_image_size_must_match_the_tokenizer(tmp_path: Path):
    with pytest.raises(ValueError, match=r"takes 8 px images .* but the data is 16 px"):
        run(TokenizerTask(TokenizerTrainConfig(preset="debug", data=procedural(16))), loop_config(tmp_path / "a"))
    task = VARTask(VARTrainConfig(tokenizer=write_debug_tokenizer(tmp_path / "tokenizer"), preset="debug",
                                  data=procedural(16)))  # fmt: skip
    with pytest.raises(ValueError, match="the data is 16 px but the tokenizer takes 8 px images"):
        run(task, loop_config(tmp_path / "b"))
    assert not (tmp_path / "a" / "checkpoints").exists() and not (tmp_path / "b" / "checkpoints").exists()


def test_a_missing_tokenizer_directory_is_one_line_and_exit_2(tmp_path: Path):
    missing = tmp_path / "missing_dir"
    result = subprocess.run(
        [sys.executable, "-m", "nextscale.cli", "train", "--tokenizer", str(missing), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"nextscale train: error: --tokenizer {missing}: directory not found (train one with nextscale "
        "train-tokenizer, or convert the released one with nextscale convert)"
    ]
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------------- NaN loss

NAN_STEP = 5  # 0-based: the sixth step; checkpoints are written after steps 2 and 4


class NaNImagesTokenizerTask(TokenizerTask):
    """Gets a batch of NaN images at step NAN_STEP, as from a corrupt file decoded without error."""

    poisoned = False

    def train_step(self, step, keys):
        self.poisoned = step == NAN_STEP
        return super().train_step(step, keys)

    def _images(self, keys):
        images = super()._images(keys)
        return torch.full_like(images, math.nan) if self.poisoned else images


class NaNInputVARTask(VARTask):
    """The transformer's input turns NaN at step NAN_STEP (token ids cannot be NaN; activations can)."""

    poisoned = False

    def setup(self, ctx):
        super().setup(ctx)
        teacher_input = self.tokenizer.teacher_input

        def poisoned_teacher_input(*args, **kwargs):
            inputs = teacher_input(*args, **kwargs)
            return inputs * math.nan if self.poisoned else inputs

        self.tokenizer.teacher_input = poisoned_teacher_input

    def train_step(self, step, keys):
        self.poisoned = step == NAN_STEP
        return super().train_step(step, keys)


def non_finite(value, where: str = "") -> list[str]:
    """Paths of the floating-point tensors in a nested dict / list that hold NaN or infinity."""
    if isinstance(value, torch.Tensor):
        return [where] if value.is_floating_point() and not torch.isfinite(value).all() else []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list | tuple) else []
    return [path for key, item in items for path in non_finite(item, f"{where}/{key}")]


@pytest.mark.parametrize("stage", ["tokenizer", "var"])
def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path, stage: str):
    if stage == "tokenizer":
        # dead-code restarts every 2 steps (the NaN step among them), with a threshold that always finds some
        config = TokenizerTrainConfig(preset="debug", data=procedural(), dead_code_every=2, dead_code_threshold=0.995)
        task = NaNImagesTokenizerTask(config)
    else:
        tokenizer_dir = write_debug_tokenizer(tmp_path / "tokenizer")
        task = NaNInputVARTask(VARTrainConfig(tokenizer=tokenizer_dir, preset="debug", data=procedural()))
    output_dir = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=rf"{stage}: loss is nan at step {NAN_STEP + 1}\b") as error:
        run(task, loop_config(output_dir, steps=10, save_every=2))

    checkpoints = CheckpointManager(output_dir / "checkpoints")
    assert checkpoints.latest().name == "step_00000004"  # the checkpoint before the NaN step
    assert str(checkpoints.latest()) in str(error.value)
    for path in checkpoints.checkpoints():
        checkpoint = checkpoints.load(path)
        assert non_finite(checkpoint.tensors) == non_finite(checkpoint.optimizer) == [], path
    assert not (output_dir / "model").exists()  # nothing exported
    logged = (output_dir / "metrics.jsonl").read_text().splitlines()
    assert len(logged) == NAN_STEP  # the NaN step's metrics are not logged
    model = task.tokenizer if stage == "tokenizer" else task.model
    assert non_finite(dict(model.state_dict())) == []  # the update with NaN gradients was refused


# ---- settings of a resumed run, --restart, --epochs, precision ------------------------------------------------------


def tokenizer_run(out: Path, *extra: str) -> list[str]:
    return ["train-tokenizer", "--preset", "debug", "--data", "procedural", "--image-size", "8", "--num-samples", "16",
            "--steps", "2", "--batch-size", "4", "--precision", "fp32", "--eval-every", "0", "--eval-batches", "1",
            "--save-every", "1", "--no-progress", "--out", str(out), *extra]  # fmt: skip


def test_a_resume_with_other_settings_is_refused_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture):
    out = tmp_path / "run"
    assert cli.main(tokenizer_run(out)) == 0
    message = cli_error(tokenizer_run(out, "--vocab-size", "32"), capsys)
    assert "tokenizer.tokenizer = {}, this run has {'vocab_size': 32}" in message and "--restart" in message
    message = cli_error(tokenizer_run(out, "--num-samples", "20"), capsys)
    assert "data.num_samples" in message
    assert cli.main(tokenizer_run(out, "--steps", "3", "--log-every", "2")) == 0  # length and logging may change
    capsys.readouterr()
    assert cli.main(tokenizer_run(out, "--vocab-size", "32", "--restart")) == 0  # start over, keep the old run
    assert "moved to" in capsys.readouterr().out
    replaced = list(out.glob("replaced-*"))
    assert len(replaced) == 1 and (replaced[0] / "checkpoints").is_dir() and (replaced[0] / "model").is_dir()
    from nextscale import from_pretrained

    assert from_pretrained(out / "model")[0].vocab_size == 32


def test_a_resume_on_a_changed_data_set_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture):
    data = tmp_path / "images"
    for cls in ("cat", "dog"):
        for i in range(4):
            write_image(data / "train" / cls / f"{i}.png", seed=i, size=(8, 8))
    argv = tokenizer_run(tmp_path / "run")
    argv[argv.index("procedural")] = str(data)
    assert cli.main(argv) == 0
    write_image(data / "train" / "dog" / "new.png", seed=9, size=(8, 8))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)  # known only once the data is read: the setup's log lines come first, the error is the last
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 2 and "Traceback" not in message
    assert "the data set changed" in message and "8 images then, 9 now" in message


@pytest.mark.parametrize(("flag", "value"), [("--save-every", "0"), ("--log-every", "0"), ("--epochs", "-1")])
def test_loop_settings_that_cannot_work(tmp_path: Path, capsys: pytest.CaptureFixture, flag, value):
    message = cli_error(tokenizer_run(tmp_path / "run", flag, value), capsys)
    assert flag.lstrip("-").replace("-", "_") in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_epochs_set_the_number_of_steps(tmp_path: Path):
    out = tmp_path / "run"
    assert cli.main(tokenizer_run(out, "--epochs", "2.5", "--log-every", "1")) == 0  # 16 images, batch 4: 10 steps
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 10


def test_auto_precision_is_bf16_only_where_the_hardware_multiplies_in_it():
    from nextscale.train.loop import resolve_precision

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")
    assert resolve_precision("fp16", torch.device("cpu")) == "fp16"
