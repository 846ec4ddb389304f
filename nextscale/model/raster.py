"""The next-token (raster-order) baseline: a GPT-2-style causal transformer over one token map.

The image is one h×w token map of a single-scale tokenizer (the VQGAN setting of the VAR paper's baseline), read
row by row: L = h·w tokens. The input at position 0 is the class embedding (the start token); the input at position
t ≥ 1 is token t−1's embedding. Every position adds a learned position embedding, and the logits at position t
predict token t from the class and tokens < t. Conditioning enters through the start token only (plain LayerNorm
blocks, no AdaLN).

Letters: B batch, L tokens of the map, l tokens fed in one decoding step, C width, V vocabulary, h/w the grid.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nextscale import label_dropout
from nextscale.errors import UsageError
from nextscale.model.blocks import LayerCache, PlainBlock
from nextscale.model.raster_config import RASTER_PRESETS, RasterConfig, raster_preset

__all__ = ["RASTER_PRESETS", "RasterConfig", "RasterTransformer", "raster_preset"]


class RasterTransformer(nn.Module):
    """Class label + tokens < t → logits of token t, for the L tokens of a one-scale token map in raster order.

    Built from its own hyper-parameters and a token space (anything with `vocab_size`, `latent_channels` and a
    one-scale `schedule`; normally the tokenizer's `TokenSpace`). `forward` is teacher forcing over all positions
    under the causal mask; `step` is KV-cached decoding. Classifier-free guidance, top-k/top-p and decoding to images
    live in `nextscale.raster_sampling`. The latent channels are not used (the input is token ids, not f̂), only
    recorded with the token space.
    """

    def __init__(self, config: RasterConfig, token_space):
        super().__init__()
        schedule = token_space.schedule
        if schedule.num_scales != 1:
            raise UsageError(
                f"the raster model needs a one-scale tokenizer (e.g. patch_nums=(8,)), got scales {schedule}"
            )
        self.config = config
        self.token_space = token_space
        self.schedule = schedule
        self.side = schedule.final_side
        self.sequence_length = L = schedule.total_length
        C = config.width
        self.class_embed = nn.Embedding(config.num_classes + 1, C)  # last row: the null class; the start token
        self.token_embed = nn.Embedding(token_space.vocab_size, C)
        self.pos_embed = nn.Parameter(torch.empty(1, L, C))
        drop_rates = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        scale = None if config.l2_norm_attention else config.attention_scale or 1.0 / math.sqrt(config.head_dim)
        self.blocks = nn.ModuleList(
            PlainBlock(
                width=C,
                num_heads=config.num_heads,
                mlp_ratio=config.mlp_ratio,
                drop_path=rate,
                l2_norm_attention=config.l2_norm_attention,
                norm_eps=config.norm_eps,
                attention_scale=scale,
            )
            for rate in drop_rates
        )
        self.head_norm = nn.LayerNorm(C, eps=config.norm_eps)
        self.head = nn.Linear(C, token_space.vocab_size)
        # True where position i may attend position j ≤ i; derived from the length, so not saved
        self.register_buffer("attn_mask_LL", torch.ones(L, L, dtype=torch.bool).tril(), persistent=False)
        self.init_weights()

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def weight_dtype(self) -> torch.dtype:
        """fp32, or bf16/fp16 when the weights were cast for inference (`nextscale.inference`)."""
        return self.head.weight.dtype

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2's initialisation, one rule per line."""
        cfg = self.config
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=cfg.init_std)  # every Linear: normal(0, 0.02), bias 0
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=cfg.init_std)  # class (start) and token embeddings
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)  # LayerNorms start as plain standardisation
                module.bias.zero_()
        nn.init.normal_(self.pos_embed, std=cfg.init_std)  # learned positions
        self.head.weight.mul_(cfg.init_head_scale)  # the head, relative to the other Linears
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * cfg.depth))  # residual projections: 1/√(2·depth)
            block.mlp.fc2.weight.div_(math.sqrt(2 * cfg.depth))
            block.attn.q_bias.zero_()  # the attention's q and v biases start at 0
            block.attn.v_bias.zero_()
            if cfg.l2_norm_attention:
                block.attn.logit_scale.fill_(math.log(4.0))  # learned temperature starts at 4, as VAR's

    # ---- pieces shared by teacher forcing and decoding --------------------------------------------------------------

    def drop_labels(self, labels_B: torch.Tensor, rate: float | None = None) -> torch.Tensor:
        """Replace labels by the null class with probability `rate` (default: the config's `label_dropout`; global
        RNG, one draw per label, as the official code)."""
        return label_dropout.drop_labels(
            labels_B, self.config.label_dropout if rate is None else rate, self.config.null_class
        )

    def start_input(self, labels_B: torch.Tensor) -> torch.Tensor:
        """Position 0's input: class embedding + position embedding, (B, 1, C)."""
        return self.class_embed(labels_B).unsqueeze(1) + self.pos_embed[:, :1]

    def token_input(self, tokens_Bl: torch.Tensor, first: int) -> torch.Tensor:
        """Inputs carrying tokens first … first+l−1 (raster indices): each sits one position later, where it helps
        predict the next token. (B, l) → (B, l, C)."""
        l = tokens_Bl.shape[1]
        if first < 0 or first + l > self.sequence_length - 1:
            raise ValueError(
                f"tokens {first}…{first + l - 1} are not inputs: only tokens 0…{self.sequence_length - 2} are"
            )
        return self.token_embed(tokens_Bl) + self.pos_embed[:, first + 1 : first + 1 + l]

    def logits(self, x_BLC: torch.Tensor) -> torch.Tensor:
        """Final LayerNorm and the linear head in the weights' precision, returned as fp32: (B, L, V)."""
        return self.head(self.head_norm(x_BLC.to(self.weight_dtype))).float()

    # ---- teacher forcing --------------------------------------------------------------------------------------------

    def forward(self, labels_B: torch.Tensor, tokens_BL: torch.Tensor, drop_labels: bool | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, t, V) for the targets `tokens_BL` (B, t ≤ L) or a token map (B, h, w); the
        logits at position i predict tokens_BL[:, i] (no shift needed by the caller: the loss is
        cross_entropy(logits, tokens)). The last given token is a target only.

        In training mode labels are dropped to the null class with probability `label_dropout`; `drop_labels=False`
        leaves that to the caller (the trainer draws it from a generator keyed by step)."""
        if tokens_BL.dim() == 3:
            tokens_BL = tokens_BL.flatten(1)
        B, t = tokens_BL.shape
        if not 1 <= t <= self.sequence_length or labels_B.shape != (B,):
            raise ValueError(
                f"expected labels (B,) and 1…{self.sequence_length} tokens (B, t), got {tuple(labels_B.shape)} "
                f"and {tuple(tokens_BL.shape)}"
            )
        if (self.training if drop_labels is None else drop_labels) and self.config.label_dropout > 0:
            labels_B = self.drop_labels(labels_B)
        x_BLC = torch.cat((self.start_input(labels_B), self.token_input(tokens_BL[:, : t - 1], 0)), dim=1)
        attn_mask = self.attn_mask_LL[:t, :t]
        for block in self.blocks:
            x_BLC = block(x_BLC, attn_mask)
        return self.logits(x_BLC)

    # ---- incremental decoding ---------------------------------------------------------------------------------------

    def new_cache(self) -> list[LayerCache]:
        """One cache per block, with room for the whole sequence (keys and values written in place)."""
        return [LayerCache(capacity=self.sequence_length) for _ in self.blocks]

    def step(self, x_BlC: torch.Tensor, cache: list[LayerCache]) -> torch.Tensor:
        """KV-cached decoding: the inputs of the next l positions (from `start_input` / `token_input`) → their
        logits (B, l, V). One position at a time needs no mask; several (a prompt) are causal among themselves."""
        past = cache[0].length
        l = x_BlC.shape[1]
        if past + l > self.sequence_length:
            raise ValueError(f"{past} cached + {l} new positions exceed the {self.sequence_length} of the token map")
        attn_mask = None if l == 1 else self.attn_mask_LL[past : past + l, : past + l]
        for block, layer_cache in zip(self.blocks, cache):
            x_BlC = block(x_BlC, attn_mask, layer_cache)
        return self.logits(x_BlC)
