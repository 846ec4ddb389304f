"""The tokenizer's architecture (`TokenizerConfig`) and its preset registry (keys double as CLI choices). Nothing here
imports torch, so that the command line builds its options from it before torch loads; `nextscale.tokenizer.tokenizer`
re-exports it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from nextscale.errors import UnknownNameError, UsageError
from nextscale.scales import SCHEDULES, ScaleSchedule, parse_patch_nums
from nextscale.token_space import TokenSpace


@dataclass
class TokenizerConfig:
    """Architecture of the multi-scale VQ tokenizer: conv encoder/decoder levels, codebook, φ convs, schedule.

    It owns the token space (`token_space`: vocabulary, latent channels, schedule) that transformers are built from.
    The image side follows from the schedule's finest scale and the downsampling (`image_size`). Training-only
    settings (loss weights, GAN, restarts) are in the tokenizer's training config, not here.
    """

    vocab_size: int = 4096  # codebook entries: the transformer's vocabulary
    latent_channels: int = 32  # Cvae, the width of the codebook vectors
    base_channels: int = 160  # channels of the first encoder level (the released tokenizer uses 160)
    channel_multipliers: tuple[int, ...] = (1, 1, 2, 2, 4)  # one level each; downsampling 2^(levels-1): 1_2_2 → 4
    num_res_blocks: int = 2  # residual blocks per encoder level (the decoder has one more)
    use_attention: bool = True  # self-attention at the lowest-resolution level
    use_mid_attention: bool = True  # self-attention in the middle block, between encoder and codebook
    num_groups: int = 32  # GroupNorm groups (capped at the channel count)
    dropout: float = 0.0  # in the residual blocks
    image_channels: int = 3  # channels of the images (3: RGB)
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)  # the scale schedule: token-map sides, 1_2_3_4
    num_phis: int = 4  # 0: one φ per scale, 1: one shared φ, n: n partially shared φ (the official default is 4)
    phi_residual_ratio: float = 0.5  # φ(h) = (1-r)·h + r·conv(h); 0 makes φ the identity
    beta: float = 0.25  # commitment weight of the VQ loss
    use_znorm: bool = False  # cosine-similarity code lookup instead of squared L2
    quant_conv_kernel: int = 3  # kernel of the convs into and out of the codebook space

    def __post_init__(self) -> None:
        self.channel_multipliers = tuple(self.channel_multipliers)
        self.patch_nums = parse_patch_nums(self.patch_nums)
        ScaleSchedule(self.patch_nums)  # validates
        if self.vocab_size < 2:
            raise UsageError(f"vocab_size must be at least 2, got {self.vocab_size}")
        if not self.channel_multipliers:
            raise UsageError("channel_multipliers needs at least one level")
        if self.num_phis < 0:
            raise UsageError(f"num_phis must be ≥ 0, got {self.num_phis}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_multipliers) - 1)

    @property
    def image_size(self) -> int:
        """Image side that the schedule's finest scale tiles exactly."""
        return self.patch_nums[-1] * self.downsample_factor

    @property
    def schedule(self) -> ScaleSchedule:
        return ScaleSchedule(self.patch_nums)

    @property
    def token_space(self) -> TokenSpace:
        """What a transformer over this tokenizer reads and predicts."""
        return TokenSpace(self.vocab_size, self.latent_channels, self.patch_nums)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


TOKENIZER_PRESETS: dict[str, TokenizerConfig] = {
    # the released tokenizer, vae_ch160v4096z32.pth (108,948,355 parameters), with the 256-px schedule
    "vqvae-f16-c160": TokenizerConfig(),
    # the same weights with the 512-px schedule of the released d36 model
    "vqvae-f16-c160-512": TokenizerConfig(patch_nums=SCHEDULES["512"]),
    # 32-px images → 8×8 finest tokens (downsampling 4), small enough to train on a CPU
    "fmnist-32": TokenizerConfig(
        vocab_size=512,
        latent_channels=16,
        base_channels=32,
        channel_multipliers=(1, 2, 2),
        num_res_blocks=1,
        use_attention=False,
        use_mid_attention=True,
        num_groups=8,
        patch_nums=(1, 2, 3, 4, 6, 8),
    ),
    # unit tests
    "debug": TokenizerConfig(
        vocab_size=64,
        latent_channels=8,
        base_channels=16,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        use_attention=False,
        use_mid_attention=False,
        num_groups=8,
        patch_nums=(1, 2, 3, 4),
    ),
}


def tokenizer_preset(name: str, **overrides) -> TokenizerConfig:
    if name not in TOKENIZER_PRESETS:
        raise UnknownNameError(f"unknown tokenizer preset {name!r}; choose from {', '.join(TOKENIZER_PRESETS)}")
    return replace(TOKENIZER_PRESETS[name], **overrides)
