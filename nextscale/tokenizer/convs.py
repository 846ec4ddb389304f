"""Convolutional encoder and decoder of the tokenizer (the latent-diffusion "VQ-f16" layout that VAR uses).

Module names follow that layout (`conv_in`, `down.{i}.block.{j}`, `mid.attn_1`, `up.{i}.upsample` …) because it is
the common vocabulary of image tokenizers; only the quantizer's names differ from the official checkpoint (see
`nextscale/convert.py`). Letters: B batch, C channels, H/W spatial size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, num_groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=min(num_groups, channels), num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels, num_groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout) if dropout > 1e-6 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        # in place on the fresh outputs of the norms and convs (autograd needs neither): on a CPU a large new tensor
        # costs its page faults, more than the activation itself
        h = self.conv1(F.silu(self.norm1(x_BCHW), inplace=True))
        h = self.conv2(self.dropout(F.silu(self.norm2(h), inplace=True)))
        return h.add_(self.nin_shortcut(x_BCHW))


class AttnBlock(nn.Module):
    """Single-head self-attention over all H·W positions, scale C^-1/2, with a residual connection."""

    def __init__(self, channels: int, num_groups: int):
        super().__init__()
        self.norm = group_norm(channels, num_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x_BCHW.shape
        q, k, v = self.qkv(self.norm(x_BCHW)).reshape(B, 3, C, H * W).unbind(1)
        weights_BNN = torch.bmm(q.transpose(1, 2), k).mul_(C**-0.5).softmax(dim=2)
        h_BCN = torch.bmm(v, weights_BNN.transpose(1, 2))
        return self.proj_out(h_BCN.reshape(B, C, H, W)).add_(x_BCHW)


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a stride-2 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x_BCHW, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x_BCHW, scale_factor=2.0, mode="nearest"))


class _Level(nn.Module):
    """One resolution level: res blocks, optional attention after each, optional resampling at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()


class _Middle(nn.Module):
    def __init__(self, channels: int, num_groups: int, dropout: float, use_attention: bool):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, num_groups, dropout)
        self.attn_1 = AttnBlock(channels, num_groups) if use_attention else nn.Identity()
        self.block_2 = ResnetBlock(channels, channels, num_groups, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


def _run_level(level: _Level, h: torch.Tensor) -> torch.Tensor:
    for i, block in enumerate(level.block):
        h = block(h)
        if len(level.attn):
            h = level.attn[i](h)
    return h


class Encoder(nn.Module):
    """Image (B, in_channels, H, W) → latent (B, latent_channels, H/f, W/f) with f = 2^(len(channel_multipliers)-1)."""

    def __init__(
        self,
        *,
        in_channels: int,
        base_channels: int,
        channel_multipliers: tuple[int, ...],
        num_res_blocks: int,
        latent_channels: int,
        num_groups: int,
        dropout: float = 0.0,
        use_attention: bool = True,
        use_mid_attention: bool = True,
    ):
        super().__init__()
        num_levels = len(channel_multipliers)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        channels_in = base_channels
        for i, mult in enumerate(channel_multipliers):
            level = _Level()
            channels_out = base_channels * mult
            for _ in range(num_res_blocks):
                level.block.append(ResnetBlock(channels_in, channels_out, num_groups, dropout))
                channels_in = channels_out
                if i == num_levels - 1 and use_attention:
                    level.attn.append(AttnBlock(channels_in, num_groups))
            if i != num_levels - 1:
                level.downsample = Downsample(channels_in)
            self.down.append(level)
        self.mid = _Middle(channels_in, num_groups, dropout, use_mid_attention)
        self.norm_out = group_norm(channels_in, num_groups)
        self.conv_out = nn.Conv2d(channels_in, latent_channels, 3, padding=1)

    def forward(self, image_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(image_BCHW)
        for level in self.down:
            h = _run_level(level, h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))


class Decoder(nn.Module):
    """Latent (B, latent_channels, h, w) → image (B, out_channels, h·f, w·f), unclamped."""

    def __init__(
        self,
        *,
        out_channels: int,
        base_channels: int,
        channel_multipliers: tuple[int, ...],
        num_res_blocks: int,
        latent_channels: int,
        num_groups: int,
        dropout: float = 0.0,
        use_attention: bool = True,
        use_mid_attention: bool = True,
    ):
        super().__init__()
        num_levels = len(channel_multipliers)
        channels_in = base_channels * channel_multipliers[-1]
        self.conv_in = nn.Conv2d(latent_channels, channels_in, 3, padding=1)
        self.mid = _Middle(channels_in, num_groups, dropout, use_mid_attention)
        levels: list[_Level] = []
        for i in reversed(range(num_levels)):
            level = _Level()
            channels_out = base_channels * channel_multipliers[i]
            for _ in range(num_res_blocks + 1):
                level.block.append(ResnetBlock(channels_in, channels_out, num_groups, dropout))
                channels_in = channels_out
                if i == num_levels - 1 and use_attention:
                    level.attn.append(AttnBlock(channels_in, num_groups))
            if i != 0:
                level.upsample = Upsample(channels_in)
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)  # stored finest-first (up.0 is full resolution), run coarsest-first
        self.norm_out = group_norm(channels_in, num_groups)
        self.conv_out = nn.Conv2d(channels_in, out_channels, 3, padding=1)

    def forward(self, latent_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(latent_BCHW))
        for level in reversed(self.up):
            h = _run_level(level, h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))
