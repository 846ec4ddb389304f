"""What training a transformer needs beyond the loop (`VARTrainConfig`), free of torch so that `nextscale train
--help` answers at once; the training itself is `nextscale.train.var_task`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nextscale.data.config import DataConfig

ARCHITECTURE_NAMES = ("var", "raster")  # next-scale VAR | the next-token raster baseline


@dataclass
class VARTrainConfig:
    """What training a transformer needs beyond the loop: the tokenizer, the model (a preset with field overrides,
    e.g. {"depth": 8, "init_adaln_gamma_scale": 1e-3}), the loss options and the data. The number of classes comes
    from the data; vocabulary, latent channels and schedule from the tokenizer."""

    tokenizer: str = "runs/tokenizer/model"  # model directory holding the tokenizer (convert), or a train-tokenizer run
    architecture: str = "var"  # var (next-scale) | raster (next-token baseline; needs a one-scale tokenizer)
    preset: str = "fmnist-small"  # preset of the architecture (VAR_PRESETS, RASTER_PRESETS)
    model: dict[str, Any] = field(default_factory=dict)  # VARConfig fields overriding the preset's
    label_smoothing: float = 0.0  # of the training loss (the logged L_mean/L_tail stay plain cross-entropy)
    cache_tokens: bool = True  # encode the dataset once when its images carry no random augmentation
    token_cache_dir: str | None = None  # where the encoded tokens go (None: <out>/token_cache); runs may share one
    progressive: float = 0.0  # > 0: grow the number of trained scales over this fraction of the run
    progressive_start_scales: int = 5  # scales trained at the start of progressive training (the recipe's pg0=4 → 5)
    data: DataConfig | None = None

    def __post_init__(self) -> None:
        from nextscale.pretrained import model_directory  # reads model folders (a torch-importing module); not --help

        self.tokenizer = str(model_directory(self.tokenizer))  # a tokenizer's run folder stands for its model/
