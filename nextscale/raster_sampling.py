"""Next-token sampling for the raster baseline: KV-cached, one token per step, classifier-free guidance, top-k/top-p.

Each step feeds one position's input for 2B rows (conditional, then the null class; B rows when cfg is 0, where the
null-class rows would change nothing) through the transformer and
mixes the two halves as the VAR sampler does, logits = (1 + g)·conditional − g·unconditional, with a constant
guidance g = `cfg` at every token: a raster sequence has no coarse-to-fine order for VAR's ramp from 0 to follow
(the paper's next-token baseline and LlamaGen guide every token alike). After the last of the h·w tokens the map is
decoded by the one-scale tokenizer.

Random numbers come from one `torch.Generator` seeded with `seed`: the labels first (when drawn), then one draw per
token. Letters: B batch, L tokens of the map, V vocabulary, h/w the grid.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from nextscale.errors import UsageError
from nextscale.model.raster import RasterTransformer
from nextscale.sampling import (
    Generation,
    LabelsLike,
    SamplingSettings,
    draw_tokens,
    make_generator,
    resolve_labels,
)
from nextscale.token_space import require_same_token_space
from nextscale.tokenizer.tokenizer import Tokenizer


@dataclass
class StepOutput:
    """What the raster sampler produced at one position, for the consumers of `sample_raster` (the trace)."""

    position: int
    logits_B1V: torch.Tensor | None  # guided logits before top-k/top-p (a copy, kept only for the trace)
    drawn_B1: torch.Tensor  # the token drawn


class _Trace:
    """The `trace` of a Generation: per position, the guided logits (before filtering) and the drawn tokens."""

    def __init__(self) -> None:
        self.records: dict[str, list[torch.Tensor]] = {"logits": [], "drawn": []}

    def __call__(self, out: StepOutput) -> None:
        self.records["logits"].append(out.logits_B1V)
        self.records["drawn"].append(out.drawn_B1.clone())


@torch.no_grad()
def sample_raster(
    model: RasterTransformer,
    tokenizer: Tokenizer,
    labels_B: torch.Tensor,
    settings: SamplingSettings,
    *,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
    trace: bool = False,
) -> Generation:
    """The sampler proper: L KV-cached steps, then the decode. `trace` keeps each step's guided logits (B, 1, V),
    before top-k/top-p, and its drawn tokens (B, 1)."""
    require_same_token_space(tokenizer.token_space, model.token_space)
    if settings.more_smooth:
        raise UsageError("more_smooth does not apply to the raster model (its input is token ids, not embeddings)")
    if settings.prune_ratio > 0:
        raise UsageError("prune_ratio does not apply to the raster model (it has no scales to prune)")
    B, L, side = labels_B.shape[0], model.sequence_length, model.side
    device = labels_B.device
    cast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    )
    recorder = _Trace() if trace else None
    consumers: list[Callable[[StepOutput], None]] = [recorder] if recorder is not None else []
    guidance = settings.cfg  # constant over the sequence
    rows = 2 if guidance > 0 else 1  # without guidance the null-class rows would change nothing: not run
    labels_2B = torch.cat((labels_B, torch.full_like(labels_B, model.config.null_class)))[: rows * B]
    cache = model.new_cache()
    tokens_BL = torch.empty(B, L, dtype=torch.int64, device=device)
    with cast:
        x_2B1C = model.start_input(labels_2B)
    for t in range(L):
        with cast:
            logits_2B1V = model.step(x_2B1C, cache)
        logits_B1V = (1 + guidance) * logits_2B1V[:B] - guidance * logits_2B1V[B:] if rows == 2 else logits_2B1V
        kept_logits_B1V = logits_B1V.clone() if recorder is not None else None  # the draw filters them in place
        idx_B1 = draw_tokens(logits_B1V, settings, generator)
        for consume in consumers:
            consume(StepOutput(t, kept_logits_B1V, idx_B1))
        tokens_BL[:, t] = idx_B1[:, 0]
        if t < L - 1:
            with cast:
                x_2B1C = model.token_input(idx_B1.repeat(rows, 1), t)
    token_map_Bhw = tokens_BL.view(B, side, side)
    with cast:
        images = tokenizer.decode([token_map_Bhw])
    images = images.float().add_(1).mul_(0.5)
    records = recorder.records if recorder is not None else {}
    return Generation(images=images, token_maps=[token_map_Bhw], labels=labels_B, trace=records)


def generate_raster(
    model: RasterTransformer,
    tokenizer: Tokenizer,
    labels: LabelsLike = None,
    settings: SamplingSettings | str | None = None,
    *,
    seed: int | None = None,
    batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    trace: bool = False,
    **overrides,
) -> Generation:
    """Class-conditional images from the raster model, with the meaning of `nextscale.sampling.generate`.

    `labels`: a list/tensor of classes, one int for all (`batch_size` copies; negative → unconditional), or None for
    `batch_size` random classes. `settings`: a `SamplingSettings`, a preset name or None (the defaults: cfg 1.5, no
    filtering); keywords cfg=, top_k=, top_p= override single fields, as in `generate` (`more_smooth` and pruning
    are refused: there are no embeddings to smooth and no scales to prune). `cfg` is the guidance of every token
    (0: none). `autocast_dtype=torch.bfloat16` runs the transformer and
    decoder in bf16. `trace` keeps each step's guided logits and drawn tokens."""
    settings = SamplingSettings.resolve(settings, **overrides)
    device = model.pos_embed.device
    generator = make_generator(seed, device)
    labels_B = resolve_labels(labels, model.num_classes, batch_size, device, generator)
    return sample_raster(
        model, tokenizer, labels_B, settings, generator=generator, autocast_dtype=autocast_dtype, trace=trace
    )
