"""The multi-scale VQ tokenizer: images ↔ K token maps r_1 … r_K.

Images are (B, 3, H, W) floats in [-1, 1]. Letters: B batch, C = Cvae latent channels, H/W image or finest latent
grid, h/w one scale's grid, K scales. The architecture's settings, `TokenizerConfig`, are in config.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from nextscale.token_space import TokenSpace
from nextscale.tokenizer.config import TOKENIZER_PRESETS, TokenizerConfig, tokenizer_preset
from nextscale.tokenizer.convs import Decoder, Encoder
from nextscale.tokenizer.quantizer import MultiScaleQuantizer

# the config and its presets live in config.py (torch-free, for the command line) and are re-exported here
__all__ = ["TOKENIZER_PRESETS", "Tokenizer", "TokenizerConfig", "TokenizerOutput", "tokenizer_preset"]


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
