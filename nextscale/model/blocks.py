"""Transformer blocks of VAR: AdaLN-modulated self-attention and MLP; the plain pre-LayerNorm (GPT-2) block of the
next-token baseline and of VAR without AdaLN.

Letters: B batch, L tokens (of all scales so far), C width, H heads, c head dim, D condition dim (= C).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

MAX_LOGIT_SCALE = math.log(100.0)  # cap of the learned per-head attention temperature (L2-normalised attention)


@dataclass
class LayerCache:
    """What one layer keeps while sampling: keys and values of every token seen so far, (B, H, L, c), and the
    block's AdaLN modulation, which depends on the class only and so is computed once per image.

    With `capacity` > 0 the keys and values go into buffers allocated once for `capacity` tokens (the whole
    sequence), and attention reads a view of the filled part; otherwise each scale is concatenated to the cache."""

    key: torch.Tensor | None = None
    value: torch.Tensor | None = None
    capacity: int = 0
    length: int = 0
    modulation: torch.Tensor | None = None

    def extend(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        added = key.shape[2]
        if self.capacity:
            if self.key is None:
                B, H, _, c = key.shape
                self.key = key.new_empty(B, H, self.capacity, c)
                self.value = value.new_empty(B, H, self.capacity, c)
            if self.length + added > self.capacity:
                raise ValueError(f"the cache holds {self.capacity} tokens; {self.length + added} were given")
            self.key[:, :, self.length : self.length + added] = key
            self.value[:, :, self.length : self.length + added] = value
            self.length += added
            return self.key[:, :, : self.length], self.value[:, :, : self.length]
        if self.key is None:
            self.key, self.value = key, value
        else:
            self.key = torch.cat((self.key, key), dim=2)
            self.value = torch.cat((self.value, value), dim=2)
        self.length += added
        return self.key, self.value

    def keep_rows(self, rows: int) -> None:
        """Keep only the first `rows` rows of the batch (keys, values, modulation) from now on: the sampler drops
        the unconditional rows once guidance stops. The buffers' leading rows are views, so nothing is copied."""
        if self.key is not None:
            self.key, self.value = self.key[:rows], self.value[:rows]
        if self.modulation is not None:
            self.modulation = self.modulation[:rows]


class AdaLNModulation(nn.Module):
    """SiLU then Linear: a condition vector (B, D) → `chunks` modulation vectors (B, 1, chunks, C)."""

    def __init__(self, cond_dim: int, width: int, chunks: int):
        super().__init__()
        self.chunks, self.width = chunks, width
        self.linear = nn.Linear(cond_dim, chunks * width)

    def forward(self, cond_BD: torch.Tensor) -> torch.Tensor:
        return self.linear(F.silu(cond_BD)).view(-1, 1, self.chunks, self.width)


class DropPath(nn.Module):
    """Stochastic depth per sample; kept samples are scaled by 1/keep so the expectation is unchanged."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x_BLC
        keep = 1.0 - self.rate
        mask_B11 = x_BLC.new_empty((x_BLC.shape[0],) + (1,) * (x_BLC.dim() - 1)).bernoulli_(keep)
        return x_BLC * mask_B11.div_(keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.4f}"


class SelfAttention(nn.Module):
    """Multi-head self-attention with VAR's q/v biases. With `l2_norm`, q and k are L2-normalised and the softmax
    temperature is learned per head; otherwise q·k is multiplied by `scale` (None: the official VAR's 0.25/√c, kept
    for checkpoint parity; GPT-2 uses 1/√c)."""

    def __init__(self, width: int, num_heads: int, l2_norm: bool, scale: float | None = None):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by {num_heads} heads")
        self.num_heads, self.head_dim = num_heads, width // num_heads
        self.l2_norm = l2_norm
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))  # keys get no bias: it would cancel in the softmax
        if l2_norm:
            # q and k are L2-normalised; the softmax temperature is learned per head, starting at 4, capped at 100
            self.logit_scale = nn.Parameter(torch.full((1, num_heads, 1, 1), math.log(4.0)))
            if scale is not None:
                raise ValueError("an attention scale applies to plain attention only (l2_norm_attention is on)")
            self.scale = 1.0
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim) if scale is None else scale
        self.proj = nn.Linear(width, width)
        # inference only (nextscale.quantization): one module computing qkv with the q/v biases folded in
        self.fused_qkv: nn.Module | None = None

    def forward(
        self, x_BLC: torch.Tensor, attn_mask: torch.Tensor | None = None, cache: LayerCache | None = None
    ) -> torch.Tensor:
        B, L, C = x_BLC.shape
        if self.fused_qkv is not None:
            qkv = self.fused_qkv(x_BLC).view(B, L, 3, self.num_heads, self.head_dim)
        else:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
            qkv = F.linear(x_BLC, self.qkv.weight, bias).view(B, L, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, L, c)
        if self.l2_norm:
            q = F.normalize(q, dim=-1).mul(self.logit_scale.clamp_max(MAX_LOGIT_SCALE).exp())
            k = F.normalize(k, dim=-1)
        if cache is not None:
            k, v = cache.extend(k, v)
        if attn_mask is not None and attn_mask.dtype != q.dtype and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(B, L, C))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x_BLC), approximate="tanh"))


class AdaLNBlock(nn.Module):
    """x += γ1·Attn(LN(x)·(1+scale1)+shift1);  x += γ2·MLP(LN(x)·(1+scale2)+shift2), all six from the class condition.

    With `shared_adaln` the six vectors come from one Linear shared by all blocks (computed once per forward by the
    caller) plus a learned per-block bias `adaln_bias`; otherwise each block has its own `adaln` Linear."""

    def __init__(
        self,
        *,
        width: int,
        num_heads: int,
        mlp_ratio: float,
        drop_path: float,
        l2_norm_attention: bool,
        shared_adaln: bool,
        norm_eps: float,
        attention_scale: float | None = None,
    ):
        super().__init__()
        self.width = width
        self.norm = nn.LayerNorm(width, eps=norm_eps, elementwise_affine=False)
        self.attn = SelfAttention(width, num_heads, l2_norm_attention, attention_scale)
        self.mlp = MLP(width, round(width * mlp_ratio))
        self.drop_path = DropPath(drop_path)
        if shared_adaln:
            self.adaln_bias = nn.Parameter(torch.randn(1, 1, 6, width) / width**0.5)
        else:
            self.adaln = AdaLNModulation(width, width, 6)

    def forward(
        self,
        x_BLC: torch.Tensor,
        cond: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """`cond` is the class condition (B, D), or the shared modulation (B, 1, 6, C) with `shared_adaln`."""
        if cache is not None and cache.modulation is not None:
            modulation = cache.modulation
        else:
            modulation = self.adaln_bias + cond if hasattr(self, "adaln_bias") else self.adaln(cond)
            if cache is not None:
                cache.modulation = modulation
        gamma1, gamma2, scale1, scale2, shift1, shift2 = modulation.unbind(2)  # order fixed by the official checkpoints
        h = self.norm(x_BLC).mul(scale1.add(1)).add_(shift1)
        x_BLC = x_BLC + self.drop_path(self.attn(h, attn_mask, cache).mul_(gamma1))
        h = self.norm(x_BLC).mul(scale2.add(1)).add_(shift2)
        return x_BLC + self.drop_path(self.mlp(h).mul(gamma2))


class PlainBlock(nn.Module):
    """The pre-LayerNorm (GPT-2) block: x += Attn(LN1(x));  x += MLP(LN2(x)), with affine LayerNorms and no class
    modulation. The conditioning of a model built from it enters through its input tokens only.

    The raster baseline uses it under a causal mask; VAR with AdaLN switched off uses it under the block-causal mask.
    `attention_scale` is the softmax temperature of q·k when `l2_norm_attention` is off: None keeps SelfAttention's
    (the official VAR's 0.25/√c, so that a VAR block differs from its AdaLN twin in the conditioning only), GPT-2's
    is 1/√c. With L2-normalised attention the learned per-head temperature takes its place."""

    def __init__(
        self,
        *,
        width: int,
        num_heads: int,
        mlp_ratio: float,
        drop_path: float,
        l2_norm_attention: bool,
        norm_eps: float,
        attention_scale: float | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=norm_eps)
        self.attn = SelfAttention(width, num_heads, l2_norm_attention, attention_scale)
        self.norm2 = nn.LayerNorm(width, eps=norm_eps)
        self.mlp = MLP(width, round(width * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x_BLC: torch.Tensor, attn_mask: torch.Tensor | None = None, cache: LayerCache | None = None
    ) -> torch.Tensor:
        """`attn_mask` (L, L) bool, True where a query may attend a key (None: everyone sees everyone, or, with a
        `cache`, the cached tokens plus the new ones)."""
        x_BLC = x_BLC + self.drop_path(self.attn(self.norm1(x_BLC), attn_mask, cache))
        return x_BLC + self.drop_path(self.mlp(self.norm2(x_BLC)))
