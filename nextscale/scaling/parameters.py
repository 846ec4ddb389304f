"""Parameter count of the VAR transformer from its configuration, without building it.

N of the scaling laws is the total count, everything `VAR(config, token_space).parameters()` holds: the VAR paper's
sizes are totals (var-d16 310M, var-d30 2.0B with the released tokenizer and 1000 classes). The embeddings are the
look-up tables, which cost no matrix products: the class embedding, the start positions, the position embedding and
the level embedding. The token embedding is a Linear on f̂ (it does multiply) and counts as a non-embedding weight,
like the head.
"""

from __future__ import annotations

from nextscale.model.config import VARConfig


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
