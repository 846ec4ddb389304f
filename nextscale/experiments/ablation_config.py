"""What the ablation (the paper's Table 3) trains and evaluates: its rows, its models and their settings.

Kept apart from the code that runs it and free of torch, so that `nextscale ablation --help` answers at once. See
`nextscale.experiments.ablation` for how the rows are trained, sampled, scored and timed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from nextscale.data.config import DataConfig
from nextscale.errors import UsageError
from nextscale.model.config import var_preset
from nextscale.model.raster_config import raster_preset


@dataclass(frozen=True)
class Row:
    name: str
    model: str  # the trained model it samples from (a key of MODELS)
    top_k: bool
    cfg: bool


@dataclass(frozen=True)
class ModelSpec:
    architecture: str  # var | raster
    preset_field: str  # the AblationConfig field naming the preset
    overrides: dict  # VARConfig / RasterConfig overrides
    large: bool = False  # the scale-up model: its own seeds and precision


GPT2_ATTENTION = "gpt2"  # marker replaced by 1/√(head dim) when the overrides are resolved

MODELS: dict[str, ModelSpec] = {
    # the AR baseline gets VAR fmnist-tiny's depth, width and heads (its preset is deeper: see RasterConfig)
    "ar": ModelSpec(
        "raster", "base_preset", {"depth": 4, "width": 128, "num_heads": 2, "attention_scale": GPT2_ATTENTION}
    ),
    "var-plain": ModelSpec(
        "var", "base_preset", {"adaln": False, "l2_norm_attention": False, "attention_scale": GPT2_ATTENTION}
    ),
    "var-adaln": ModelSpec(
        "var", "base_preset", {"adaln": True, "l2_norm_attention": False, "attention_scale": GPT2_ATTENTION}
    ),
    "var-full": ModelSpec("var", "base_preset", {"adaln": True, "l2_norm_attention": True}),
    "var-large": ModelSpec("var", "large_preset", {"adaln": True, "l2_norm_attention": True}, large=True),
}
ROWS = (
    Row("AR", "ar", top_k=False, cfg=False),
    Row("AR → VAR", "var-plain", top_k=False, cfg=False),
    Row("+ AdaLN", "var-adaln", top_k=False, cfg=False),
    Row("+ top-k", "var-adaln", top_k=True, cfg=False),
    Row("+ CFG", "var-adaln", top_k=True, cfg=True),
    Row("+ attn. norm.", "var-full", top_k=True, cfg=True),
    Row("+ scale up", "var-large", top_k=True, cfg=True),
)
CURVE_ROWS = ("AR", "AR → VAR", "+ attn. norm.")  # the rows whose models are scored along training
PAPER = {  # the paper's Table 3 (ImageNet 256): FID, and the inference cost relative to AR where quoted here
    "AR": (18.65, 1.0),
    "AR → VAR": (5.22, 0.013),
    "+ AdaLN": (4.95, None),
    "+ top-k": (4.64, None),
    "+ CFG": (3.60, None),
    "+ attn. norm.": (3.30, None),
    "+ scale up": (1.73, None),  # VAR-d30
}


@dataclass
class AblationConfig:
    """The models, the shared training budget, the seeds and the evaluation of the ablation."""

    output_dir: str = "runs/ablation"
    tokenizer: str = "runs/fmnist/tokenizer/model"  # the multi-scale tokenizer of the VAR rows
    raster_tokenizer: str = "runs/fmnist/tokenizer-1scale/model"  # one-scale tokenizer at the finest grid (AR)
    base_preset: str = "fmnist-tiny"  # size of the base rows (AR gets the same depth, width and heads)
    large_preset: str = "fmnist-small"  # VAR size of the "scale up" row
    images: int = 120_000  # training images of every model (2 epochs of Fashion-MNIST)
    batch_size: int = 64
    base_lr: float = 4e-3  # per 256 images
    final_lr_ratio: float = 0.1
    ema_decay: float = 0.0  # EMA of the weights, exported and scored (0: the raw weights, as the shipped model's)
    precision: str = "fp32"  # of the base rows: fp32 | bf16 (bf16 only where the hardware has it)
    large_precision: str = "auto"  # of the scale-up model (auto: bf16 where the hardware multiplies in it)
    train_seeds: tuple[int, ...] = (0, 1)  # every base model trains once per seed
    large_train_seeds: tuple[int, ...] = (0,)  # the scale-up model (the costliest run)
    sample_seeds: tuple[int, ...] = (0, 1, 2)  # every trained model is sampled once per seed
    curve_points: int = 5  # checkpoints scored along training (evenly spaced in steps; the last is the end)
    top_k: int = 112  # the official 900 of 4096 codes, scaled to a 512-code vocabulary
    cfg: float = 1.5  # the official FID setting's guidance
    samples_per_class: int = 200  # samples of each class per (model, sampling seed) for FID / IS / accuracy
    sample_batch_size: int = 100
    timing_batch: int = 100  # throughput batch of the cost measurement (latency is at batch 1)
    timing_repeats: int = 3  # interleaved rounds; the best of them is kept
    reference: str = "fashion-mnist:test"  # the real images FID is measured against (or a folder / an .npz)
    rows: tuple[str, ...] = tuple(row.name for row in ROWS)  # which rows to run (AR is needed: costs are relative)
    large_model: str = ""  # a model directory standing in for the scale-up run's training seed 0 (not trained)
    recorded: str = ""  # an ablation.json (e.g. docs/data/ablation.json) whose finished models are not trained again
    data: DataConfig = field(default_factory=lambda: DataConfig(name="fashion-mnist", image_size=32))

    def __post_init__(self) -> None:
        if self.images < self.batch_size or self.samples_per_class < 1 or self.timing_batch < 1:
            raise UsageError("images must be at least one batch, samples_per_class and timing_batch positive")
        if self.curve_points < 1 or self.timing_repeats < 1:
            raise UsageError("curve_points and timing_repeats must be positive")
        for name in ("rows", "train_seeds", "large_train_seeds", "sample_seeds"):
            setattr(self, name, tuple(getattr(self, name)))
            if not getattr(self, name):
                raise UsageError(f"{name} must not be empty")
        known = [row.name for row in ROWS]
        unknown = [name for name in self.rows if name not in known]
        if unknown or "AR" not in self.rows:
            raise UsageError(f"rows must include AR and come from {known}; got {list(self.rows)}")
        if self.recorded and not Path(self.recorded).is_file():  # refused before anything trains
            raise UsageError(f"recorded {self.recorded}: no such file (an ablation.json, e.g. docs/data/ablation.json)")

    @property
    def selected_rows(self) -> tuple[Row, ...]:
        return tuple(row for row in ROWS if row.name in self.rows)

    @property
    def steps(self) -> int:
        return max(self.images // self.batch_size, 1)

    @property
    def curve_steps(self) -> list[int]:
        """The steps scored along training: `curve_points` evenly spaced, the last one the final step."""
        return sorted({max(round(self.steps * (i + 1) / self.curve_points), 1) for i in range(self.curve_points)})

    def settings(self, row: Row):
        """The row's SamplingSettings (guidance and top-k only where the row has them)."""
        from nextscale.sampling import SamplingSettings  # the sampler's module imports torch; --help must not

        return SamplingSettings(cfg=self.cfg if row.cfg else 0.0, top_k=self.top_k if row.top_k else 0, top_p=0.0)

    def seeds(self, key: str) -> tuple[int, ...]:
        return self.large_train_seeds if MODELS[key].large else self.train_seeds

    def model_keys(self) -> list[str]:
        needed = {row.model for row in self.selected_rows}
        return [key for key in MODELS if key in needed]

    def training_order(self) -> list[tuple[str, int]]:
        """(model, training seed) of every model: every model's first seed, then every model's second, …, so that an
        ablation cut short has one of each model before it has two of any."""
        keys = self.model_keys()
        most = max(len(self.seeds(key)) for key in keys)
        return [(key, self.seeds(key)[i]) for i in range(most) for key in keys if i < len(self.seeds(key))]

    def stands_in(self, key: str, seed: int) -> bool:
        """Whether `large_model` is this model (the scale-up model's first training seed) instead of a trained run."""
        return bool(self.large_model) and MODELS[key].large and seed == self.seeds(key)[0]


def model_overrides(config: AblationConfig, key: str) -> dict:
    """The model's preset overrides with the GPT-2 attention temperature resolved to 1/√(head dim)."""
    spec = MODELS[key]
    overrides = {k: v for k, v in spec.overrides.items() if v != GPT2_ATTENTION}
    if spec.overrides.get("attention_scale") == GPT2_ATTENTION:
        preset = raster_preset if spec.architecture == "raster" else var_preset
        built = preset(getattr(config, spec.preset_field), **overrides)
        overrides["attention_scale"] = 1.0 / math.sqrt(built.width // built.num_heads)
    return overrides
