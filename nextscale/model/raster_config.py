"""The raster baseline's configuration and its preset registry (keys double as CLI choices). Nothing here imports
torch, so that the command line builds its options from it before torch loads; `nextscale.model.raster` re-exports
it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nextscale.errors import UnknownNameError, UsageError


@dataclass
class RasterConfig:
    """The raster transformer's own hyper-parameters. What it reads and predicts (vocabulary, the one token map) is
    the tokenizer's token space, passed to `RasterTransformer(config, token_space)`. Width and heads follow from
    the depth as for VAR (width 64·depth, 64-wide heads) unless given; GPT-2 small is depth 12 in this rule."""

    depth: int = 12
    width: int | None = None  # C; None → 64·depth
    num_heads: int | None = None  # None → depth
    num_classes: int = 1000  # the null (unconditional) class is index `num_classes`
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0  # stochastic depth of the last block; earlier blocks get a linear ramp from 0
    label_dropout: float = 0.1  # probability of replacing a label with the null class while training (for CFG)
    l2_norm_attention: bool = False  # VAR's L2-normalised q/k with a learned temperature; off: softmax(q·k·scale)
    attention_scale: float | None = None  # q·k factor without l2_norm_attention; None → GPT-2's 1/√(head dim)
    norm_eps: float = 1e-5  # GPT-2's LayerNorm epsilon
    # init_weights(): GPT-2's rules
    init_std: float = 0.02  # every Linear, embedding and the position embedding
    init_head_scale: float = 1.0  # the head's std is init_std × this (GPT-2 ties it to the token embedding: 1)

    def __post_init__(self) -> None:
        if self.width is None:
            self.width = 64 * self.depth
        if self.num_heads is None:
            self.num_heads = self.depth
        if self.depth < 1 or self.width < 1 or self.num_heads < 1:
            raise UsageError(f"depth, width, heads must be positive: {self.depth}, {self.width}, {self.num_heads}")
        if self.width % self.num_heads:
            raise UsageError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.num_classes < 1:
            raise UsageError(f"num_classes must be positive, got {self.num_classes}")
        if not self.mlp_ratio > 0:
            raise UsageError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise UsageError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if not 0.0 <= self.label_dropout < 1.0:
            raise UsageError(f"label_dropout must be in [0, 1), got {self.label_dropout}")
        if not self.norm_eps > 0:
            raise UsageError(f"norm_eps must be positive, got {self.norm_eps}")
        if self.attention_scale is not None and (self.l2_norm_attention or not self.attention_scale > 0):
            raise UsageError(
                f"attention_scale ({self.attention_scale}) must be positive and needs l2_norm_attention off"
            )
        if not self.init_std > 0 or self.init_head_scale < 0:
            raise UsageError(
                f"init_std must be positive and init_head_scale ≥ 0: {self.init_std}, {self.init_head_scale}"
            )

    @property
    def null_class(self) -> int:
        return self.num_classes

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    def to_dict(self) -> dict:
        return asdict(self)


_CPU_SIZED = dict(num_classes=10, drop_path_rate=0.0)

# Constructor arguments, so that overriding `depth` re-derives width and heads. The fmnist sizes pair with a
# one-scale version of the "fmnist-32" tokenizer (8×8 tokens, V = 512) and match the parameter counts of the VAR
# presets of the same name: a plain block has no AdaLN Linear (6C² per block), so the raster model is deeper.
RASTER_PRESETS: dict[str, dict] = {
    "gpt2-small": dict(depth=12),  # GPT-2 small's shape (768 wide, 12 heads)
    "fmnist-small": dict(depth=9, width=256, num_heads=4, **_CPU_SIZED),  # ≈ VAR fmnist-small's parameters
    "fmnist-tiny": dict(depth=6, width=128, num_heads=2, **_CPU_SIZED),  # ≈ VAR fmnist-tiny's parameters
    "debug": dict(depth=2, width=64, num_heads=2, **_CPU_SIZED),
}


def raster_preset(name: str, **overrides) -> RasterConfig:
    if name not in RASTER_PRESETS:
        raise UnknownNameError(f"unknown raster preset {name!r}; choose from {', '.join(RASTER_PRESETS)}")
    return RasterConfig(**{**RASTER_PRESETS[name], **overrides})
