"""What a scaling sweep varies (depth, seed) and what it holds fixed: one token budget, one schedule, one tokenizer.

Kept apart from the code that runs the sweep and free of torch, so that `nextscale scaling --help` answers at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from nextscale.data.config import DataConfig
from nextscale.errors import UsageError


@dataclass
class SweepConfig:
    """What a sweep varies (depth) and what it holds fixed (everything else)."""

    output_dir: str = "runs/scaling"  # the sweep's folder: one run per depth, the fits and the figures
    tokenizer: str = "runs/tokenizer/model"  # model directory holding the tokenizer every run uses
    depths: tuple[int, ...] = (2, 3, 4, 5, 6)  # one run per depth
    width_per_depth: int = 64  # width = width_per_depth · depth (the paper: 64)
    head_width: int = 64  # heads = width / head_width (the paper: 64)
    images: int = 50_000  # training images per run (rounded to whole evaluation spacings): one token budget for all
    batch_size: int = 64
    base_lr: float = 1e-3  # per 256 images (lr = base_lr × batch_size / 256), as the training recipe
    evaluations: int = 8  # evaluation points per run, evenly spaced in steps (so in compute), the last the final step
    eval_images: int = 2048  # validation images per evaluation point (a multiple of batch_size)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (bf16 only where the hardware has it)
    seeds: tuple[int, ...] = (0,)  # every size trains once per seed
    recorded: str = ""  # a runs.json (e.g. docs/data/scaling/runs.json) whose runs of this sweep count as finished
    data: DataConfig = field(default_factory=lambda: DataConfig(name="fashion-mnist", image_size=32))

    def __post_init__(self) -> None:
        self.depths = tuple(sorted(set(int(d) for d in self.depths)))
        if len(self.depths) < 2 or self.depths[0] < 1:
            raise UsageError(f"a sweep needs at least two positive depths, got {self.depths}")
        if self.images < self.batch_size or self.batch_size < 1:
            raise UsageError(f"images ({self.images}) must be at least one batch ({self.batch_size})")
        if self.evaluations < 2 or self.eval_images < 1:
            raise UsageError("a sweep needs at least 2 evaluation points and 1 evaluation image")
        if self.eval_images % self.batch_size:
            raise UsageError(
                f"eval_images ({self.eval_images}) must be a multiple of batch_size ({self.batch_size}): evaluations "
                "read whole batches, and the number the flag says is the number read"
            )
        if self.images < self.batch_size * self.evaluations:
            raise UsageError(f"images ({self.images}) must give at least one step per evaluation ({self.evaluations})")
        self.seeds = tuple(sorted(set(int(s) for s in self.seeds)))
        if not self.seeds:
            raise UsageError("a sweep needs at least one seed")
        for depth in self.depths:
            width = self.width_per_depth * depth
            if width % self.head_width:
                raise UsageError(f"width {width} of depth {depth} is not a multiple of head_width {self.head_width}")

    @property
    def spacing(self) -> int:
        """Steps between evaluations."""
        return max(round(self.images / self.batch_size / self.evaluations), 1)

    @property
    def steps(self) -> int:
        return self.spacing * self.evaluations

    @property
    def evaluation_steps(self) -> list[int]:
        """The steps evaluated: every `spacing` steps, the last one the final step."""
        return [self.spacing * (i + 1) for i in range(self.evaluations)]

    def recorded_runs(self) -> list[dict]:
        """The runs of `recorded` that belong to this sweep (same name, width, steps and images): on a machine that
        lacks their folders they are not trained again, and the report fits them with the runs trained here."""
        if not self.recorded:
            return []
        path = Path(self.recorded)
        if not path.is_file():
            raise UsageError(f"recorded {path}: no such file (a runs.json written by the sweep or the scaling report)")
        wanted = {(f"d{d}-seed{s}", self.width_per_depth * d) for d in self.depths for s in self.seeds}
        return [run for run in json.loads(path.read_text())
                if (run["name"], run["width"]) in wanted and run["steps"] == self.steps
                and run["images"] == self.steps * self.batch_size]  # fmt: skip

    def model_overrides(self, depth: int) -> dict:
        width = self.width_per_depth * depth
        return {"depth": depth, "width": width, "num_heads": width // self.head_width}
