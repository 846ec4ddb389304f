"""One training run of an experiment: a transformer on a tokenizer, as `nextscale train` would run it.

Both experiments (the ablation and the scaling sweep) describe each of their runs as a `TrainingJob` built by
`transformer_job`, so a run of either is an ordinary run folder that `nextscale train` could resume, and a rerun of
the experiment resumes or skips it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nextscale.data.config import DataConfig
from nextscale.train.config import LoopConfig
from nextscale.train.loop import run
from nextscale.train.var_config import VARTrainConfig
from nextscale.train.var_task import VARTask


@dataclass(frozen=True)
class TrainingJob:
    """The task settings and the loop settings of one run."""

    task: object  # a VARTrainConfig (built lazily: the training modules are imported only to train)
    loop: LoopConfig

    @property
    def directory(self) -> Path:
        return Path(self.loop.output_dir)

    @property
    def exported(self) -> bool:
        """Whether the run has finished and written its model."""
        return (self.directory / "model").is_dir()

    def run(self) -> Path:
        """Train (or resume) to the end; returns the export directory."""
        return run(VARTask(self.task), self.loop)


def transformer_job(
    *,
    output_dir: str | Path,
    tokenizer: str,
    preset: str,
    model: dict,
    data: DataConfig,
    token_cache_dir: str | Path,
    architecture: str = "var",
    **loop_settings,
) -> TrainingJob:
    """The job that trains `architecture` (`var` or `raster`) of `preset` with the `model` overrides on `tokenizer`
    (a model directory) and `data`, into `output_dir`; `loop_settings` are LoopConfig fields (steps, batch_size,
    base_lr, seed, …). The data set's tokens are cached in `token_cache_dir`, shared by every run on the tokenizer."""
    task = VARTrainConfig(
        tokenizer=str(tokenizer),
        architecture=architecture,
        preset=preset,
        model=dict(model),
        token_cache_dir=str(token_cache_dir),
        data=data,
    )
    return TrainingJob(task=task, loop=LoopConfig(output_dir=str(output_dir), **loop_settings))
