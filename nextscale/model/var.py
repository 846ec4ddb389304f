"""The VAR transformer: predicts all tokens of scale k at once from the class and the scales before k.

The sequence holds every scale's tokens, coarse to fine (L = Σ pn²). Position i of scale k carries the tokenizer's
f̂ of scales < k resized to scale k (the first scale instead carries the class embedding), and its logits predict
token i of scale k. Attention is block-causal: a token sees its own scale and all earlier ones.

Letters: B batch, L all tokens, l one scale's tokens, C width, D condition dim (= C), V vocabulary, Cv latent channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nextscale import label_dropout
from nextscale.model.blocks import AdaLNBlock, AdaLNModulation, LayerCache, PlainBlock
from nextscale.model.config import VARConfig
from nextscale.token_space import TokenSpace


class VAR(nn.Module):
    """The VAR transformer: class label + the tokenizer's coarser scales → logits for every token of the next scale.

    Built from its own hyper-parameters (`VARConfig`) and the token space of the tokenizer it works with
    (vocabulary, latent channels, scale schedule). `forward` is teacher forcing over all L tokens at once under the
    block-causal mask, giving (B, L, V) logits; `step` is one scale of KV-cached decoding. It holds no tokenizer
    weights and knows nothing of sampling: classifier-free guidance, top-k/top-p and the f̂ bookkeeping live in
    `nextscale.sampling`, label dropout for training is available here but drawn by the caller when it must be
    reproducible across processes.
    """

    def __init__(self, config: VARConfig, token_space: TokenSpace):
        super().__init__()
        self.config = config
        self.token_space = token_space
        self.schedule = schedule = token_space.schedule
        C, std = config.width, config.resolved_init_std
        self.token_embed = nn.Linear(token_space.latent_channels, C)
        self.class_embed = nn.Embedding(config.num_classes + 1, C)  # last row: the null class
        self.start_pos = nn.Parameter(torch.empty(1, schedule.first_length, C))
        self.pos_embed = nn.Parameter(torch.empty(1, schedule.total_length, C))
        self.level_embed = nn.Embedding(schedule.num_scales, C)
        self.shared_adaln = AdaLNModulation(C, C, 6) if config.shared_adaln else None
        drop_rates = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        block_kwargs = dict(
            width=C,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            l2_norm_attention=config.l2_norm_attention,
            attention_scale=config.attention_scale,
            norm_eps=config.norm_eps,
        )
        if config.adaln:
            blocks = [AdaLNBlock(drop_path=r, shared_adaln=config.shared_adaln, **block_kwargs) for r in drop_rates]
        else:  # the ablation without AdaLN: the class reaches the blocks only through the start token
            blocks = [PlainBlock(drop_path=r, **block_kwargs) for r in drop_rates]
        self.blocks = nn.ModuleList(blocks)
        self.head_norm = nn.LayerNorm(C, eps=config.norm_eps, elementwise_affine=not config.adaln)
        self.head_adaln = AdaLNModulation(C, C, 2) if config.adaln else None  # scale, shift
        self.head = nn.Linear(C, token_space.vocab_size)
        # derived from the schedule, so not saved
        self.register_buffer("level_L", schedule.level_ids(), persistent=False)
        self.register_buffer("attn_mask_LL", schedule.attention_mask(), persistent=False)
        nn.init.trunc_normal_(self.start_pos, std=std)
        nn.init.trunc_normal_(self.pos_embed, std=std)
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
        """The official initialisation (`init_weights` of the reference), one rule per line."""
        cfg, depth = self.config, self.config.depth
        std = cfg.resolved_init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=std)  # every Linear: truncated normal, bias 0
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                nn.init.trunc_normal_(module.weight, std=std)  # class and level embeddings
        self.head.weight.mul_(cfg.init_head_scale)  # near-uniform initial predictions
        if self.head_adaln is not None:
            self.head_adaln.linear.weight.mul_(cfg.init_adaln_scale)
        for block in self.blocks:
            block.attn.proj.weight.div_(math.sqrt(2 * depth))  # residual branches scaled by depth
            block.mlp.fc2.weight.div_(math.sqrt(2 * depth))
            if cfg.adaln and cfg.shared_adaln:
                block.adaln_bias.normal_().div_(math.sqrt(cfg.width))
                block.adaln_bias[:, :, 2:].mul_(cfg.init_adaln_scale)  # scales and shifts
                block.adaln_bias[:, :, :2].mul_(cfg.init_adaln_gamma_scale)  # gammas: blocks start near identity
            elif cfg.adaln:  # (plain blocks keep PyTorch's LayerNorm init: weight 1, bias 0)
                weight = block.adaln.linear.weight
                weight[2 * cfg.width :].mul_(cfg.init_adaln_scale)
                weight[: 2 * cfg.width].mul_(cfg.init_adaln_gamma_scale)
            if cfg.l2_norm_attention:
                block.attn.logit_scale.fill_(math.log(4.0))
            block.attn.q_bias.zero_()
            block.attn.v_bias.zero_()

    # ---- pieces shared by teacher forcing and sampling -------------------------------------------------------------

    def drop_labels(self, labels_B: torch.Tensor, rate: float | None = None) -> torch.Tensor:
        """Replace labels by the null class with probability `rate` (default: the config's `label_dropout`; global
        RNG, one draw per label, as the official code)."""
        return label_dropout.drop_labels(
            labels_B, self.config.label_dropout if rate is None else rate, self.config.null_class
        )

    def condition(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """What the blocks receive: the class condition, or the shared AdaLN modulation computed once."""
        return self.shared_adaln(cond_BD) if self.shared_adaln is not None else cond_BD

    def start_tokens(self, cond_BD: torch.Tensor) -> torch.Tensor:
        """The first scale's input: class embedding + start position + level/position embedding, (B, first_l, C)."""
        first = self.schedule.first_length
        sos_BlC = cond_BD.unsqueeze(1).expand(-1, first, -1) + self.start_pos.expand(cond_BD.shape[0], -1, -1)
        return sos_BlC + (self.level_embed(self.level_L[:first]) + self.pos_embed[0, :first])

    def scale_tokens(self, scale: int, input_BlCv: torch.Tensor) -> torch.Tensor:
        """Input tokens of scale ≥ 1 from the tokenizer's resized f̂: (B, l, Cv) → (B, l, C)."""
        begin, end = self.schedule.span(scale)
        level_pos_lC = self.level_embed(self.level_L[begin:end]) + self.pos_embed[0, begin:end]
        return self.token_embed(input_BlCv.to(self.weight_dtype)) + level_pos_lC

    def logits(self, x_BLC: torch.Tensor, cond_BD: torch.Tensor) -> torch.Tensor:
        """Final AdaLN (scale, shift) and the linear head, in the weights' precision (fp32 unless the model was cast
        for inference), returned as fp32: (B, L, V)."""
        dtype = self.weight_dtype
        h = self.head_norm(x_BLC.to(dtype))
        if self.head_adaln is not None:
            scale, shift = self.head_adaln(cond_BD.to(dtype)).unbind(2)
            h = h.mul(scale.add(1)).add_(shift)
        return self.head(h.to(dtype)).float()

    # ---- teacher forcing --------------------------------------------------------------------------------------------

    def forward(
        self,
        labels_B: torch.Tensor,
        teacher_input_BLCv: torch.Tensor,
        num_scales: int | None = None,
        drop_labels: bool | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits (B, L, V) in fp32; the targets are the concatenated token maps, with no shift.

        `teacher_input_BLCv` is the tokenizer's `teacher_input` (B, L − first_l, Cv). In training mode labels are
        dropped to the null class with probability `label_dropout`. (The official code drops labels in eval mode too;
        the parity tests switch that off there and check the dropout mechanism separately.) With `num_scales` < K
        only the first scales are processed (progressive training). `drop_labels=False` leaves label dropout to the
        caller (the trainer draws it from a generator keyed by step, so N processes drop what 1 process would)."""
        schedule = self.schedule
        num_scales = schedule.num_scales if num_scales is None else num_scales
        end = schedule.offsets[num_scales]
        B = labels_B.shape[0]
        if (self.training if drop_labels is None else drop_labels) and self.config.label_dropout > 0:
            labels_B = self.drop_labels(labels_B)
        device_type = labels_B.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            cond_BD = self.class_embed(labels_B)
            parts = [cond_BD.unsqueeze(1).expand(B, schedule.first_length, -1) + self.start_pos.expand(B, -1, -1)]
            if num_scales > 1:
                inputs_BLCv = teacher_input_BLCv[:, : end - schedule.first_length].to(self.weight_dtype)
                parts.append(self.token_embed(inputs_BLCv))
            x_BLC = torch.cat(parts, dim=1) + (self.level_embed(self.level_L[:end]) + self.pos_embed[0, :end])
        attn_mask = self.attn_mask_LL[:end, :end]
        cond = self.condition(cond_BD)
        for block in self.blocks:
            x_BLC = block(x_BLC, cond, attn_mask) if self.config.adaln else block(x_BLC, attn_mask)
        return self.logits(x_BLC, cond_BD)

    # ---- incremental decoding ---------------------------------------------------------------------------------------

    def new_cache(self) -> list[LayerCache]:
        """One cache per block, with room for the whole sequence (keys and values written in place, scale by scale)."""
        return [LayerCache(capacity=self.schedule.total_length) for _ in self.blocks]

    def step(self, x_BlC: torch.Tensor, cond_BD: torch.Tensor, cache: list[LayerCache]) -> torch.Tensor:
        """One scale of KV-cached decoding: the new scale's input tokens → its logits (B, l, V). No mask is needed:
        the cache holds exactly the earlier scales, and tokens within a scale see each other."""
        return self.logits(self.step_hidden(x_BlC, cond_BD, cache), cond_BD)

    def step_hidden(self, x_BlC: torch.Tensor, cond_BD: torch.Tensor, cache: list[LayerCache]) -> torch.Tensor:
        """`step` up to the last block's output (B, l, C), before the head."""
        modulated = bool(cache) and all(layer_cache.modulation is not None for layer_cache in cache)
        cond = cond_BD if modulated else self.condition(cond_BD)  # the blocks read their cached modulation instead
        for block, layer_cache in zip(self.blocks, cache):
            if self.config.adaln:
                x_BlC = block(x_BlC, cond, None, layer_cache)
            else:
                x_BlC = block(x_BlC, None, layer_cache)
        return x_BlC


def cross_entropy_per_token(logits_BLV: torch.Tensor, targets_BL: torch.Tensor, label_smoothing: float = 0.0):
    """(B, L) per-token cross-entropy, the training loss before averaging (every token weighs 1/L)."""
    return F.cross_entropy(
        logits_BLV.reshape(-1, logits_BLV.shape[-1]),
        targets_BL.reshape(-1),
        label_smoothing=label_smoothing,
        reduction="none",
    ).view_as(targets_BL)
