"""The multi-scale VQ tokenizer: images ↔ K token maps r_1 … r_K.

Images are (B, 3, H, W) floats in [-1, 1]. Letters: B batch, C = Cvae latent channels, H/W image or finest latent
grid, h/w one scale's grid, K scales.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from nextscale.errors import UnknownNameError, UsageError
from nextscale.scales import SCHEDULES, ScaleSchedule, parse_patch_nums
from nextscale.token_space import TokenSpace
from nextscale.tokenizer.convs import Decoder, Encoder
from nextscale.tokenizer.quantizer import MultiScaleQuantizer


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


@dataclass
class TokenizerOutput:
    """Training forward: reconstruction (unclamped), VQ loss, token maps."""

    reconstruction: torch.Tensor
    vq_loss: torch.Tensor
    token_maps: list[torch.Tensor] = field(default_factory=list)
    residuals: list[torch.Tensor] = field(default_factory=list)  # what each scale quantised, (B, C, h, w), detached


class Tokenizer(nn.Module):
    """Multi-scale VQ tokenizer: images (B, 3, H, W) in [-1, 1] ↔ K token maps (B, h_k, w_k), coarse to fine.

    `encode` / `decode` are the inference API (no gradients); `forward` is the training pass (straight-through
    reconstruction and VQ loss); `teacher_input` builds the transformer's input from token maps. The encoder and
    decoder are the VQGAN convolution stacks of the released tokenizer; the quantizer is `MultiScaleQuantizer`.
    It does not train itself (see `nextscale.train.tokenizer_task`) and does not know any transformer.
    """

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = config
        self.schedule = config.schedule
        conv_kwargs = dict(
            base_channels=config.base_channels,
            channel_multipliers=config.channel_multipliers,
            num_res_blocks=config.num_res_blocks,
            latent_channels=config.latent_channels,
            num_groups=config.num_groups,
            dropout=config.dropout,
            use_attention=config.use_attention,
            use_mid_attention=config.use_mid_attention,
        )
        self.encoder = Encoder(in_channels=config.image_channels, **conv_kwargs)
        self.decoder = Decoder(out_channels=config.image_channels, **conv_kwargs)
        kernel = config.quant_conv_kernel
        self.quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, kernel, padding=kernel // 2)
        self.post_quant_conv = nn.Conv2d(config.latent_channels, config.latent_channels, kernel, padding=kernel // 2)
        self.quantizer = MultiScaleQuantizer(
            vocab_size=config.vocab_size,
            latent_channels=config.latent_channels,
            schedule=self.schedule,
            num_phis=config.num_phis,
            phi_residual_ratio=config.phi_residual_ratio,
            beta=config.beta,
            use_znorm=config.use_znorm,
        )

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def token_space(self) -> TokenSpace:
        return self.config.token_space

    def _check_images(self, images_BCHW: torch.Tensor) -> None:
        size, channels = self.config.image_size, self.config.image_channels
        if images_BCHW.dim() != 4 or images_BCHW.shape[1] != channels:
            raise ValueError(f"images must be (B, {channels}, H, W), got {tuple(images_BCHW.shape)}")
        if tuple(images_BCHW.shape[-2:]) != (size, size):
            raise ValueError(
                f"this tokenizer takes {size}×{size} images (final scale {self.schedule.final_side} × downsampling "
                f"{self.config.downsample_factor}), got {tuple(images_BCHW.shape[-2:])}"
            )

    def latent(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        """quant_conv(encoder(x)): the feature map that gets quantised, (B, C, H/f, W/f)."""
        self._check_images(images_BCHW)
        return self.quant_conv(self.encoder(self._conv_input(images_BCHW, self.encoder.conv_in.weight))).float()

    @torch.no_grad()
    def encode(self, images_BCHW: torch.Tensor) -> list[torch.Tensor]:
        """Images in [-1, 1] → K int64 token maps, each (B, h_k, w_k)."""
        return self.quantizer.quantize(self.latent(images_BCHW))[0]

    @torch.no_grad()
    def encode_with_fhat(self, images_BCHW: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Token maps and the cumulative f̂ after each scale."""
        return self.quantizer.quantize(self.latent(images_BCHW))

    def decode_fhat(self, f_hat_BCHW: torch.Tensor) -> torch.Tensor:
        """f̂ → images clamped to [-1, 1] (fp32, whatever precision the decoder was cast to)."""
        h_BCHW = self._conv_input(f_hat_BCHW, self.post_quant_conv.weight)
        return self.decoder(self.post_quant_conv(h_BCHW)).float().clamp_(-1, 1)

    @staticmethod
    def _conv_input(x_BCHW: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """`x` in the precision and memory layout of the convolutions it enters (a no-op for the default fp32,
        contiguous tokenizer; see `nextscale.inference` for the others)."""
        channels_last = not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        return x_BCHW.to(dtype=weight.dtype, memory_format=layout)

    @torch.no_grad()
    def decode(self, token_maps: list[torch.Tensor]) -> torch.Tensor:
        """Token maps of the first k ≤ K scales → images in [-1, 1]; fewer than K maps give a coarse preview."""
        return self.decode_fhat(self.quantizer.fhat_from_tokens(token_maps)[-1])

    @torch.no_grad()
    def reconstruct_per_scale(self, images_BCHW: torch.Tensor) -> list[torch.Tensor]:
        """Decoded images after each scale (coarse to fine), each (B, 3, H, W) in [-1, 1]."""
        _, fhat_list = self.encode_with_fhat(images_BCHW)
        return [self.decode_fhat(f) for f in fhat_list]

    @torch.no_grad()
    def teacher_input(self, token_maps: list[torch.Tensor], num_scales: int | None = None) -> torch.Tensor:
        """The transformer's teacher-forcing input, (B, L − first_l, C)."""
        return self.quantizer.teacher_input(token_maps, num_scales)

    def forward(self, images_BCHW: torch.Tensor) -> TokenizerOutput:
        """Training forward: straight-through reconstruction (not clamped) and the VQ loss (β = config.beta)."""
        f_hat_st, vq_loss, token_maps, residuals = self.quantizer(self.latent(images_BCHW))
        reconstruction = self.decoder(self.post_quant_conv(f_hat_st))
        return TokenizerOutput(reconstruction, vq_loss, token_maps, residuals)
