"""Named training recipes: the settings of a run that are not the user's to invent each time.

A recipe layers over the configs' own defaults and under the flags a user types: `nextscale train --recipe var-d16
--data /imagenet --tokenizer vqvae-dir` trains the official d16 recipe, and any flag still overrides one field. Each
recipe names the values of four configs: the loop (`LoopConfig`: batch, lr, schedule, precision …), the data
(`DataConfig`), the task (`VARTrainConfig` / `TokenizerTrainConfig`) and, for transformers, the model
(`VARConfig` fields on top of the task's preset).

The official ones follow the README of FoundationVision/VAR (torchrun commands of `train.py`; see
../shared/reference/var-reference.md §4): `--bs` is the global batch, `--ep` the epochs, `--tblr` the base lr per 256
images, `--alng` the AdaLN gamma init, `--wpe` the final lr ratio of the `lin0` schedule (warmup is epochs/50, 2% of
the run, the library's default), `--twde` the final weight decay, `--fp16=1` fp16 autocast with a gradient scaler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    description: str
    loop: dict[str, Any] = field(default_factory=dict)  # LoopConfig fields
    data: dict[str, Any] = field(default_factory=dict)  # DataConfig fields
    task: dict[str, Any] = field(default_factory=dict)  # the task config's fields
    model: dict[str, Any] = field(default_factory=dict)  # VARConfig fields over the task's preset


_IMAGENET_256 = dict(image_size=256, resize_ratio=1.125, hflip=False)


def _official(depth: int, epochs: int, batch: int, base_lr: float, gamma: float, final_lr: float, **extra) -> Recipe:
    final_wd = extra.pop("final_weight_decay", None)
    model = {"init_adaln_gamma_scale": gamma, **extra.pop("model", {})}
    loop = dict(epochs=epochs, batch_size=batch, base_lr=base_lr, final_lr_ratio=final_lr, weight_decay=0.05)
    if final_wd is not None:
        loop["final_weight_decay"] = final_wd
    loop.update(precision="fp16", grad_clip=2.0, lr_schedule="lin0")
    data = {**_IMAGENET_256, **extra.pop("data", {})}
    return Recipe(
        description=f"official VAR-d{depth} (FoundationVision/VAR README)",
        loop=loop,
        data=data,
        task=dict(preset=f"var-d{depth}", label_smoothing=0.0, cache_tokens=False),
        model=model,
    )


VAR_RECIPES: dict[str, Recipe] = {
    # torchrun … train.py --depth=16 --bs=768 --ep=200 --fp16=1 --alng=1e-3 --wpe=0.1
    "var-d16": _official(16, 200, 768, 1e-4, 1e-3, 0.1),
    # --depth=20 --bs=768 --ep=250 --fp16=1 --alng=1e-3 --wpe=0.1
    "var-d20": _official(20, 250, 768, 1e-4, 1e-3, 0.1),
    # --depth=24 --bs=768 --ep=350 --tblr=8e-5 --fp16=1 --alng=1e-4 --wpe=0.01
    "var-d24": _official(24, 350, 768, 8e-5, 1e-4, 0.01),
    # --depth=30 --bs=1024 --ep=350 --tblr=8e-5 --fp16=1 --alng=1e-5 --wpe=0.01 --twde=0.08
    "var-d30": _official(30, 350, 1024, 8e-5, 1e-5, 0.01, final_weight_decay=0.08),
    # --depth=36 --saln=1 --pn=512 --bs=768 --ep=350 --tblr=8e-5 --fp16=1 --alng=5e-6 --wpe=0.01 --twde=0.08
    # (the 512-px schedule comes with its tokenizer: `nextscale convert --vae … --patch-nums 512`)
    "var-d36-512": _official(
        36, 350, 768, 8e-5, 5e-6, 0.01, final_weight_decay=0.08, model={"shared_adaln": True}, data={"image_size": 512}
    ),
    # CPU: the docs' Fashion-MNIST transformer (docs/results.md)
    "fmnist-small": Recipe(
        description="Fashion-MNIST 32 px, fmnist-small on a CPU (docs/results.md)",
        loop=dict(steps=4000, batch_size=64, base_lr=1e-4, weight_decay=0.05, save_every=250),
        data=dict(name="fashion-mnist", image_size=32),
        task=dict(preset="fmnist-small"),
    ),
}

TOKENIZER_RECIPES: dict[str, Recipe] = {
    "fmnist-32": Recipe(
        description="Fashion-MNIST 32 px tokenizer on a CPU (docs/results.md)",
        # written where `nextscale train --tokenizer` looks by default (runs/tokenizer/model)
        loop=dict(
            output_dir="runs/tokenizer", steps=2000, batch_size=64, base_lr=1e-3, weight_decay=0.0, save_every=250
        ),
        data=dict(name="fashion-mnist", image_size=32),
        task=dict(preset="fmnist-32"),
    ),
}

DEFAULT_VAR_RECIPE = "fmnist-small"
DEFAULT_TOKENIZER_RECIPE = "fmnist-32"
