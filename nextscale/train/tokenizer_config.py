"""`TokenizerTrainConfig`: what training a tokenizer needs beyond the loop. Nothing here imports torch, so that the
command line builds its options from it before torch loads; `nextscale.train.tokenizer_task` re-exports it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nextscale.data.config import DataConfig


@dataclass
class TokenizerTrainConfig:
    """What training a tokenizer needs beyond the loop: the architecture (a preset with field overrides, e.g.
    {"vocab_size": 1024, "patch_nums": (1, 2, 4, 8)}), the loss weights, the optional perceptual and GAN losses,
    the dead-code restarts and the data."""

    preset: str = "fmnist-32"  # tokenizer preset (TOKENIZER_PRESETS)
    tokenizer: dict[str, Any] = field(default_factory=dict)  # TokenizerConfig fields overriding the preset's
    l1_weight: float = 1.0  # of the L1 reconstruction loss
    l2_weight: float = 1.0  # of the L2 (squared error) reconstruction loss
    vq_weight: float = 1.0  # of the VQ loss (codebook and commitment terms)
    perceptual_weight: float = 0.0  # of the LPIPS perceptual loss; > 0 needs perceptual_weights
    perceptual_weights: str | None = None  # local VGG16 / LPIPS state dict
    gan_weight: float = 0.0  # > 0 enables the patch discriminator
    gan_start_step: int = 0  # step from which the GAN loss (and the discriminator's training) is on
    adaptive_gan_weight: bool = True  # scale the GAN loss by the ratio of gradient norms at the decoder's last layer
    dead_code_every: int = 100  # steps between dead-code restarts; 0 disables
    dead_code_threshold: float = 0.03  # a code is dead below this fraction of the uniform hit rate
    dead_code_grace_steps: int = 100  # steps a code keeps its vector before it can be restarted (again)
    data: DataConfig | None = None
