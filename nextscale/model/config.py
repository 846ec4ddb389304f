"""Transformer configuration and the preset registry (keys double as CLI choices)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from nextscale.errors import UnknownNameError, UsageError


@dataclass
class VARConfig:
    """The transformer's own hyper-parameters: size, conditioning, attention, regularisation and initialisation.

    What the transformer reads and predicts (vocabulary, latent channels, scale schedule) is not here: it belongs to
    the tokenizer and reaches the model as a `TokenSpace` (`VAR(config, token_space)`). Width and heads follow from
    the depth as in every released model (width 64·depth, one 64-wide head per layer) unless given.
    """

    depth: int = 16  # transformer blocks; width and heads follow from it unless given
    width: int | None = None  # C; None → 64·depth (head dim 64, as every released model)
    num_heads: int | None = None  # None → depth
    num_classes: int = 1000  # the null (unconditional) class is index `num_classes`
    mlp_ratio: float = 4.0  # hidden width of the feed-forward layers, as a multiple of the width
    drop_path_rate: float | None = None  # None → 0.1·depth/24, as the official factory
    label_dropout: float = 0.1  # probability of replacing a label with the null class while training (for CFG)
    adaln: bool = True  # AdaLN class conditioning in each block; off: plain LayerNorm, class in the start token
    shared_adaln: bool = False  # one AdaLN Linear for all blocks plus per-block biases (the 512-px d36 model)
    l2_norm_attention: bool = True  # L2-normalised q/k with a learned per-head temperature
    attention_scale: float | None = None  # q·k factor without l2_norm_attention; None → the official 0.25/√(head dim)
    norm_eps: float = 1e-6  # epsilon of the layer norms
    # init_weights(): see VAR.init_weights for what each factor touches
    init_std: float | None = None  # None → sqrt(1/(3·width))
    init_head_scale: float = 0.02  # scale of the output head's initial weights
    init_adaln_scale: float = 0.5  # scale of the AdaLN projections' initial weights
    init_adaln_gamma_scale: float = 1e-5  # the official README uses 1e-3 for d16/d20, 1e-4 d24, 1e-5 d30, 5e-6 d36

    def __post_init__(self) -> None:
        if self.width is None:
            self.width = 64 * self.depth
        if self.num_heads is None:
            self.num_heads = self.depth
        if self.drop_path_rate is None:
            self.drop_path_rate = 0.1 * self.depth / 24
        if self.depth < 1 or self.width < 1 or self.num_heads < 1:
            raise UsageError(f"depth, width, heads must be positive: {self.depth}, {self.width}, {self.num_heads}")
        if self.width % self.num_heads:
            raise UsageError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.num_classes < 1:
            raise UsageError(f"num_classes must be positive, got {self.num_classes}")
        if self.shared_adaln and not self.adaln:
            raise UsageError("shared_adaln needs adaln (there is no modulation to share without it)")
        if not 0.0 <= self.label_dropout < 1.0:
            raise UsageError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if self.attention_scale is not None and (self.l2_norm_attention or not self.attention_scale > 0):
            raise UsageError(
                f"attention_scale ({self.attention_scale}) must be positive and needs l2_norm_attention off "
                "(the normalised attention learns its own temperature)"
            )

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def resolved_init_std(self) -> float:
        return self.init_std if self.init_std is not None and self.init_std > 0 else math.sqrt(1 / (3 * self.width))

    def to_dict(self) -> dict:
        return asdict(self)


# small models trained on a CPU (10 classes, no drop path, gammas starting at the d16/d20 recipe's 1e-3)
_CPU_SIZED = dict(num_classes=10, drop_path_rate=0.0, init_adaln_gamma_scale=1e-3)

# Presets hold constructor arguments (not built configs) so that overriding `depth` re-derives width, heads, drop path.
# The released models pair with the released tokenizer (its 256-px schedule; var-d36 with the 512-px one).
VAR_PRESETS: dict[str, dict] = {
    "var-d16": dict(depth=16),
    "var-d20": dict(depth=20),
    "var-d24": dict(depth=24),
    "var-d30": dict(depth=30),
    "var-d36": dict(depth=36, shared_adaln=True),
    # CPU-sized models, e.g. on the 32-px Fashion-MNIST tokenizer preset "fmnist-32"
    "fmnist-small": dict(depth=6, width=256, num_heads=4, **_CPU_SIZED),
    "fmnist-tiny": dict(depth=4, width=128, num_heads=2, **_CPU_SIZED),  # the quickstart's: minutes on 2 cores
    "debug": dict(depth=2, width=64, num_heads=2, **_CPU_SIZED),
}


def var_preset(name: str, **overrides) -> VARConfig:
    if name not in VAR_PRESETS:
        raise UnknownNameError(f"unknown transformer preset {name!r}; choose from {', '.join(VAR_PRESETS)}")
    return VARConfig(**{**VAR_PRESETS[name], **overrides})
