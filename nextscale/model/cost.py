"""What a transformer costs, counted from its configuration without building it: FLOPs per image (training and
sampling) and the parameter count N, for VAR and for the raster (next-token) baseline.

Convention. A FLOP is one multiply or one add: a matrix product (m, k) @ (k, n) costs 2·m·k·n. Only matrix products
are counted (every Linear, and attention's q·kᵀ and softmax·v); elementwise work (LayerNorm, softmax, GELU, the AdaLN
modulation, biases, residual sums, the loss) and embedding look-ups are not. This is what
`torch.utils.flop_counter.FlopCounterMode` counts, and the convention of the scaling-law literature (C ≈ 6·N·D).

Training = forward + backward. The backward of a matrix product computes the gradient of its input and of its
weight, two products of the forward's size: backward = 2 × forward, so training = 3 × forward for every part but one.
The exception is the token embedding: its input is the frozen tokenizer's f̂, which needs no gradient, so autograd
computes only its weight gradient (backward = 1 × forward). Training is therefore 3 × forward − the token embedding's
forward (below 0.2 % of the total for every preset). The tokenizer's own work (the f̂ of the teacher input) belongs
to the tokenizer and is not counted.

Attention. The training forward runs dense L×L attention under the block-causal mask (scaled_dot_product_attention
with a boolean mask): every query is multiplied with every key and the masked scores are discarded. `attention=
"dense"` (the default) counts those L² pairs, which is what is computed and what FlopCounterMode counts;
`attention="block_causal"` counts only the pairs the mask keeps (Σₖ lₖ · (tokens of scales ≤ k)), the work an
implementation that skips masked blocks would do. Fused kernels (flash, memory-efficient) recompute the scores in
their backward; that implementation detail is not counted (FlopCounterMode adds it for the fused GPU kernels: one
more q·kᵀ product per attention in the backward).

Sampling runs each scale once with a KV cache: scale k's lₖ queries see exactly the keys of scales ≤ k, so there is
no dense/block-causal choice. Classifier-free guidance runs a doubled batch (the class and the null class) through the
transformer; nextscale's sampler always does, even with cfg 0.

Letters: L tokens of the trained scales, l one scale's tokens, C width, Cv latent channels, V vocabulary, c head dim.

Parameters. Parameter count of the VAR transformer from its configuration, without building it.

N of the scaling laws is the total count, everything `VAR(config, token_space).parameters()` holds: the VAR paper's
sizes are totals (var-d16 310M, var-d30 2.0B with the released tokenizer and 1000 classes). The embeddings are the
look-up tables, which cost no matrix products: the class embedding, the start positions, the position embedding and
the level embedding. The token embedding is a Linear on f̂ (it does multiply) and counts as a non-embedding weight,
like the head.

The raster baseline (`raster_*`): one map of L tokens in raster order, plain pre-LayerNorm blocks, dense causal
attention (the L×L scores are computed, the mask discards half), a token embedding look-up (no product) and the head;
training is 3 × forward (every input needs its gradient).
"""

from __future__ import annotations

from nextscale.errors import UsageError
from nextscale.model.config import VARConfig
from nextscale.model.raster import RasterConfig

ATTENTION_COUNTS = ("dense", "block_causal")

# the parts of the forward pass, in the order the model runs them
PARTS = ("token_embed", "adaln", "qkv", "attention", "proj", "mlp", "head_adaln", "head")


def _scales(token_space, num_scales: int | None) -> int:
    total = token_space.schedule.num_scales
    if num_scales is None:
        return total
    if not 1 <= num_scales <= total:
        raise UsageError(f"num_scales must be in [1, {total}] for the scales {token_space.schedule}, got {num_scales}")
    return num_scales


def attention_pairs(token_space, *, attention: str = "dense", num_scales: int | None = None) -> int:
    """Query-key pairs one attention layer multiplies per image in teacher forcing over the first `num_scales` scales:
    L² for `dense`, the pairs the block-causal mask keeps for `block_causal`."""
    if attention not in ATTENTION_COUNTS:
        raise UsageError(f"attention must be one of {', '.join(ATTENTION_COUNTS)}, got {attention!r}")
    schedule = token_space.schedule
    n = _scales(token_space, num_scales)
    if attention == "dense":
        return schedule.offsets[n] ** 2
    return sum(schedule.lengths[k] * schedule.offsets[k + 1] for k in range(n))


def _mlp_hidden(config: VARConfig) -> int:
    return round(config.width * config.mlp_ratio)  # as the MLP is built (nextscale.model.blocks.AdaLNBlock)


def _per_token_block_flops(config: VARConfig) -> int:
    """Forward FLOPs of one block's token-wise Linears for one token: qkv, proj, MLP fc1 and fc2."""
    C, hidden = config.width, _mlp_hidden(config)
    return 2 * C * 3 * C + 2 * C * C + 2 * 2 * C * hidden


def forward_flops_by_part(
    config: VARConfig, token_space, *, attention: str = "dense", num_scales: int | None = None
) -> dict[str, int]:
    """Forward FLOPs of teacher forcing per image, by part (`PARTS`), over the first `num_scales` scales (all by
    default; fewer in progressive training).

    token_embed: f̂ (Cv) → C for the L − l₁ tokens after the first scale · adaln: the blocks' SiLU+Linear C → 6C,
    once per image (AdaLN reads the class, not the tokens), once in all with `shared_adaln`, never without `adaln` ·
    qkv, proj, mlp: C → 3C, C → C, C → hidden → C on each of the L tokens in every block · attention: q·kᵀ and
    softmax·v, 2·C FLOPs each per query-key pair (summed over heads) in every block · head_adaln: C → 2C once per
    image (with `adaln`) · head: C → V per token.
    `token_space` is any object with `vocab_size`, `latent_channels` and `schedule` (a `TokenSpace`)."""
    schedule = token_space.schedule
    n = _scales(token_space, num_scales)
    L, first = schedule.offsets[n], schedule.first_length
    C, depth = config.width, config.depth
    hidden = _mlp_hidden(config)
    adaln_layers = 0 if not config.adaln else 1 if config.shared_adaln else depth
    return {
        "token_embed": 2 * (L - first) * token_space.latent_channels * C,
        "adaln": adaln_layers * 2 * C * 6 * C,
        "qkv": depth * L * 2 * C * 3 * C,
        "attention": depth * 2 * 2 * C * attention_pairs(token_space, attention=attention, num_scales=n),
        "proj": depth * L * 2 * C * C,
        "mlp": depth * L * 2 * 2 * C * hidden,
        "head_adaln": 2 * C * 2 * C if config.adaln else 0,
        "head": L * 2 * C * token_space.vocab_size,
    }


def forward_flops_per_image(
    config: VARConfig, token_space, *, attention: str = "dense", num_scales: int | None = None
) -> int:
    """Teacher-forcing forward FLOPs per image (the sum of `forward_flops_by_part`)."""
    return sum(forward_flops_by_part(config, token_space, attention=attention, num_scales=num_scales).values())


def training_flops_per_image(
    config: VARConfig, token_space, *, attention: str = "dense", num_scales: int | None = None
) -> int:
    """FLOPs of one training image, forward and backward: 3 × forward, less the token embedding's input gradient,
    which is never computed (its input, the tokenizer's f̂, needs none). A step of B images costs B times this (with
    gradient accumulation too); a run's compute is the sum over its steps (progressive training: `num_scales` of
    each step). `attention`: "dense" (computed, the default) or "block_causal" (unmasked pairs only)."""
    parts = forward_flops_by_part(config, token_space, attention=attention, num_scales=num_scales)
    return 3 * sum(parts.values()) - parts["token_embed"]


def block_training_flops_per_image(
    config: VARConfig, token_space, *, attention: str = "dense", num_scales: int | None = None
) -> int:
    """What one more block adds to `training_flops_per_image`: 3 × its forward (with its own AdaLN Linear unless
    `shared_adaln`, where the one shared Linear does not grow with depth, or without `adaln`)."""
    schedule = token_space.schedule
    n = _scales(token_space, num_scales)
    C = config.width
    pairs = attention_pairs(token_space, attention=attention, num_scales=n)
    forward = schedule.offsets[n] * _per_token_block_flops(config) + 2 * 2 * C * pairs
    if config.adaln and not config.shared_adaln:
        forward += 2 * C * 6 * C
    return 3 * forward


def inference_flops_per_image(config: VARConfig, token_space, *, classifier_free_guidance: bool = True) -> int:
    """Transformer FLOPs of sampling one image with nextscale's KV-cached sampler (`nextscale.sampling`).

    Each scale k runs once: its lₖ tokens through every block, attending the cached keys of scales ≤ k, then the
    head. With `classifier_free_guidance` every image is two rows (class and null class); the token embedding of
    the next scale's input is computed once per image and then repeated, the blocks' AdaLN modulation (or the shared
    AdaLN Linear with `shared_adaln`) once per row, at the first scale (then cached), the head's AdaLN at every scale;
    none of them without `adaln`. At the first scale the guidance weight is 0, so the head runs on the class rows
    only. Not counted: the tokenizer's work (f̂ updates, decoding) and top-k/top-p sampling."""
    schedule = token_space.schedule
    rows = 2 if classifier_free_guidance else 1
    C, depth, Cv, V = config.width, config.depth, token_space.latent_channels, token_space.vocab_size
    per_token = depth * _per_token_block_flops(config)
    total = 0
    for k in range(schedule.num_scales):
        length, keys = schedule.lengths[k], schedule.offsets[k + 1]
        step = length * per_token + depth * 2 * 2 * C * length * keys
        head = length * 2 * C * V + (2 * C * 2 * C if config.adaln else 0)
        # the first scale's guidance weight is 0: its unconditional rows fill the cache but skip the head
        head_rows = 1 if k == 0 and schedule.num_scales > 1 else rows
        total += rows * step + head_rows * head
        if k > 0:
            total += 2 * length * Cv * C  # this scale's input tokens, embedded once per image
    if config.adaln:
        total += rows * (1 if config.shared_adaln else depth) * 2 * C * 6 * C
    return total


def embedding_parameters(config: VARConfig, token_space) -> int:
    """Parameters of the look-up tables: class (with the null class), start positions, positions, levels."""
    schedule, C = token_space.schedule, config.width
    return C * ((config.num_classes + 1) + schedule.first_length + schedule.total_length + schedule.num_scales)


def block_parameters(config: VARConfig) -> int:
    """Parameters of one block: its AdaLN Linear (with `shared_adaln` its 6·C bias; without `adaln` the two affine
    LayerNorms of the plain block instead), qkv with the q and v biases, the per-head temperature with L2-normalised
    attention, proj and the MLP."""
    C, hidden = config.width, round(config.width * config.mlp_ratio)
    if not config.adaln:
        conditioning = 2 * 2 * C
    else:
        conditioning = 6 * C if config.shared_adaln else C * 6 * C + 6 * C
    attention = C * 3 * C + 2 * C + (config.num_heads if config.l2_norm_attention else 0) + C * C + C
    mlp = C * hidden + hidden + hidden * C + C
    return conditioning + attention + mlp


def parameter_count(config: VARConfig, token_space, *, include_embeddings: bool = True) -> int:
    """N: the transformer's parameters (all of them by default; `include_embeddings=False` leaves out the look-up
    tables of `embedding_parameters`). `token_space` is any object with `vocab_size`, `latent_channels` and
    `schedule`."""
    C = config.width
    token_embed = token_space.latent_channels * C + C
    shared_adaln = C * 6 * C + 6 * C if config.shared_adaln else 0
    # the head's AdaLN Linear (without `adaln`: its affine LayerNorm instead), then the head
    head_conditioning = C * 2 * C + 2 * C if config.adaln else 2 * C
    head = head_conditioning + C * token_space.vocab_size + token_space.vocab_size
    total = token_embed + shared_adaln + config.depth * block_parameters(config) + head
    return total + (embedding_parameters(config, token_space) if include_embeddings else 0)


# ---- the raster (next-token) baseline -----------------------------------------------------------------------------


def raster_forward_flops_per_image(config: RasterConfig, token_space, *, tokens: int | None = None) -> int:
    """Teacher-forcing forward FLOPs of the raster model over `tokens` positions (all L of the map by default): the
    token-wise Linears of every block, dense causal attention (2·C FLOPs per query-key pair for q·kᵀ and as much for
    softmax·v, over all L² pairs) and the head."""
    L = token_space.schedule.total_length if tokens is None else tokens
    C, V = config.width, token_space.vocab_size
    hidden = round(C * config.mlp_ratio)
    per_token = 2 * C * 3 * C + 2 * C * C + 2 * 2 * C * hidden
    return config.depth * (L * per_token + 2 * 2 * C * L * L) + L * 2 * C * V


def raster_training_flops_per_image(config: RasterConfig, token_space) -> int:
    """Forward and backward FLOPs of one training image of the raster model: 3 × forward."""
    return 3 * raster_forward_flops_per_image(config, token_space)


def raster_parameter_count(config: RasterConfig, token_space) -> int:
    """Every parameter of `RasterTransformer(config, token_space)`: class and token embeddings, positions, the plain
    blocks (two affine LayerNorms, qkv with q and v biases, the temperature with L2-normalised attention, proj, MLP),
    the final LayerNorm and the head."""
    C, V, L = config.width, token_space.vocab_size, token_space.schedule.total_length
    hidden = round(C * config.mlp_ratio)
    block = 2 * 2 * C + C * 3 * C + 2 * C + (config.num_heads if config.l2_norm_attention else 0) + C * C + C
    block += C * hidden + hidden + hidden * C + C
    return (config.num_classes + 1) * C + V * C + L * C + config.depth * block + 2 * C + C * V + V


def training_flops(config: VARConfig | RasterConfig, token_space) -> int:
    """Training FLOPs per image of either architecture (dense attention, every scale)."""
    if isinstance(config, RasterConfig):
        return raster_training_flops_per_image(config, token_space)
    return training_flops_per_image(config, token_space)


def parameters(config: VARConfig | RasterConfig, token_space) -> int:
    """N of either architecture."""
    if isinstance(config, RasterConfig):
        return raster_parameter_count(config, token_space)
    return parameter_count(config, token_space)
