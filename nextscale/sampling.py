"""Next-scale sampling with a KV cache, classifier-free guidance and top-k/top-p (editing builds on it: editing.py).

Each step feeds one scale's tokens (2B rows: conditional, then unconditional) through the transformer, mixes the two
halves with a guidance weight that grows linearly from 0 at the first scale to `cfg` at the last (with cfg 0, one
row per image: the unconditional half would change nothing), samples that
scale's token map and adds it to the tokenizer's f̂, whose resized copy is the next scale's input. With
`guidance_scales = n` guidance stops after the first n scales (Switti- and StageVAR-style): the unconditional rows are
dropped from the batch and from the KV cache, so the later, largest scales run one row per image.

Random numbers come from one `torch.Generator` seeded with `seed`, drawn in the official sampler's order (labels,
then per scale: the token draw, then the Gumbel noise when `more_smooth`), so the same weights, settings and seed give
the official code's tokens. `inverse_cdf` draws the same distribution from far fewer random numbers
(`sample_inverse_cdf`), so its tokens are its own.
Letters: B batch, l one scale's tokens, V vocabulary, Cv latent channels, h/w grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from nextscale.errors import UsageError
from nextscale.model.var import VAR
from nextscale.sampling_settings import SAMPLING_PRESETS, SamplingSettings
from nextscale.token_space import require_same_token_space
from nextscale.tokenizer.tokenizer import Tokenizer

# the settings and their presets live in sampling_settings.py (torch-free, for the command line), re-exported here
__all__ = [
    "SAMPLING_PRESETS", "ForcedTokens", "Generation", "LabelsLike", "SamplingSettings", "ScaleCallback", "ScaleOutput",
    "draw_tokens", "filter_top_k_top_p_", "generate", "gumbel_softmax", "make_generator", "resolve_labels",
    "sample_inverse_cdf", "sample_scales", "sample_top_k_top_p",
]  # fmt: skip

LabelsLike = int | Sequence[int] | torch.Tensor | None
# called after each scale with (scale index, f̂ so far (B, Cv, H, W), that scale's token map (B, h, w)); for previews
ScaleCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
# zero-shot editing: (the input image's K token maps (B, h, w), K keep masks (B, 1, h, w), True = force the input's)
ForcedTokens = tuple[list[torch.Tensor], list[torch.Tensor]]


@dataclass
class Generation:
    """What a sampler returns: the images, the token maps that built them and the classes used; `trace` holds
    per-scale internals when they were asked for (`trace=True`)."""

    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    token_maps: list[torch.Tensor]  # K × (B, h_k, w_k): the tokens that built the image
    labels: torch.Tensor  # (B,) the classes used (num_classes = unconditional)
    trace: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # per-scale internals when asked for


def filter_top_k_top_p_(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Set to −inf, in place, the logits top-k and top-p drop: top-k keeps every value ≥ the k-th largest (ties
    survive); top-p drops the tokens whose ascending cumulative probability is ≤ 1 − top_p, always keeping the most
    likely one. Returns `logits_BlV`."""
    V = logits_BlV.shape[-1]
    if top_k > 0:
        threshold_Bl1 = logits_BlV.topk(min(top_k, V), largest=True, sorted=False, dim=-1)[0].amin(dim=-1, keepdim=True)
        logits_BlV.masked_fill_(logits_BlV < threshold_Bl1, -torch.inf)
    if top_p > 0:
        sorted_BlV, order_BlV = logits_BlV.sort(dim=-1, descending=False)
        drop_sorted = sorted_BlV.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        drop_sorted[..., -1:] = False
        logits_BlV.masked_fill_(drop_sorted.scatter(order_BlV.ndim - 1, order_BlV, drop_sorted), -torch.inf)
    return logits_BlV


def sample_top_k_top_p(
    logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The official draw: one token per position from the filtered softmax, by `torch.multinomial`. Masks
    `logits_BlV` in place (`filter_top_k_top_p_`; the official Gumbel smoothing then sees the masked logits).
    Returns (B, l) int64."""
    B, l, V = logits_BlV.shape
    probs_NV = filter_top_k_top_p_(logits_BlV, top_k, top_p).softmax(dim=-1).view(-1, V)
    return torch.multinomial(probs_NV, num_samples=1, replacement=True, generator=generator).view(B, l)


def sample_inverse_cdf(
    logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The distribution of `sample_top_k_top_p`, drawn with one uniform number per position: the top-k candidates'
    probabilities (every token when top_k is 0) summed in turn, and the first whose running sum passes u × total
    taken. `torch.multinomial` draws an exponential number for each of the V entries of every row; this draws one
    per row (the shipped fmnist model's draws for a batch of 100 images: 0.196 s against 0.043 s on two EPYC cores,
    docs/performance.md). Other random numbers, so other tokens than the official sampler's for the same seed; the
    logits are left as they are. Returns (B, l) int64."""
    B, l, V = logits_BlV.shape
    k = min(top_k, V) if top_k > 0 else V
    if top_p > 0:  # top-p needs the candidates in order, most likely first
        values_Blk, index_Blk = logits_BlV.topk(k, dim=-1, largest=True, sorted=True)
    elif k < V:
        values_Blk, index_Blk = logits_BlV.topk(k, dim=-1, largest=True, sorted=False)
    else:
        values_Blk, index_Blk = logits_BlV, None
    probs_Blk = values_Blk.float().softmax(dim=-1)
    if top_p > 0:  # the official rule: drop where the mass of a token and every less likely one is ≤ 1 − top_p
        mass_below_Blk = probs_Blk.flip(-1).cumsum(dim=-1).flip(-1)
        drop_Blk = mass_below_Blk <= 1 - top_p
        drop_Blk[..., 0] = False
        probs_Blk.masked_fill_(drop_Blk, 0.0)
    running_Blk = probs_Blk.cumsum_(dim=-1)
    uniform_Bl1 = torch.rand((B, l, 1), generator=generator, device=logits_BlV.device)
    pick_Bl1 = torch.searchsorted(running_Blk, uniform_Bl1 * running_Blk[..., -1:], right=True).clamp_(max=k - 1)
    return (pick_Bl1 if index_Blk is None else index_Blk.gather(-1, pick_Bl1)).view(B, l)


def draw_tokens(
    logits_BlV: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One token per position under `settings`' filters, by the official multinomial draw or, with
    `settings.inverse_cdf`, by `sample_inverse_cdf`. With `more_smooth` the logits are filtered in place either way
    (the Gumbel smoothing reads them). Returns (B, l) int64."""
    if not settings.inverse_cdf:
        return sample_top_k_top_p(logits_BlV, settings.top_k, settings.top_p, generator)
    if settings.more_smooth:
        return sample_inverse_cdf(filter_top_k_top_p_(logits_BlV, settings.top_k, settings.top_p), generator=generator)
    return sample_inverse_cdf(logits_BlV, settings.top_k, settings.top_p, generator)


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    """Softmax of (logits + Gumbel noise) / tau, the noise drawn from `generator` (the official `more_smooth`)."""
    gumbels = (
        -torch.empty_like(logits, memory_format=torch.legacy_contiguous_format).exponential_(generator=generator).log()
    )
    return ((logits + gumbels) / tau).softmax(dim=-1)


def resolve_labels(
    labels: LabelsLike, num_classes: int, batch_size: int | None, device, generator: torch.Generator | None
) -> torch.Tensor:
    """Labels → (B,) int64 classes. A list/tensor of ints is used as is; one int fills the batch (negative:
    unconditional, i.e. the null class `num_classes`); None draws random classes from `generator`. Classes must lie in
    [0, num_classes] (num_classes = unconditional); floats are refused rather than truncated."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0):
        raise UsageError(f"batch_size must be a positive integer, got {batch_size!r}")
    if labels is None:
        if batch_size is None:
            raise UsageError("random labels need a batch_size")
        uniform = torch.full((1, num_classes), 1.0 / num_classes, device=device)
        return torch.multinomial(uniform, num_samples=batch_size, replacement=True, generator=generator).reshape(-1)
    if _is_integer(labels):
        label = int(labels)
        labels = [num_classes if label < 0 else label] * (1 if batch_size is None else batch_size)
    if isinstance(labels, torch.Tensor) and labels.ndim > 0:
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise UsageError(f"labels must be integer classes, got a {labels.dtype} tensor")
        labels_B = labels.to(device=device, dtype=torch.int64).reshape(-1)
    else:
        labels = [labels] if not isinstance(labels, Sequence) or isinstance(labels, str) else list(labels)
        bad = [y for y in labels if not _is_integer(y)]
        if bad:
            raise UsageError(f"labels must be integer classes, got {bad[0]!r}")
        labels_B = torch.tensor([int(y) for y in labels], dtype=torch.int64, device=device)
    if labels_B.numel() == 0:
        raise UsageError("labels are empty")
    if batch_size is not None and batch_size != labels_B.numel():
        raise UsageError(f"{labels_B.numel()} labels given for batch_size {batch_size}")
    bad = (labels_B < 0) | (labels_B > num_classes)
    if bad.any():
        raise UsageError(
            f"class {labels_B[bad][0].item()} is outside [0, {num_classes}) ({num_classes} means unconditional)"
        )
    return labels_B


def _is_integer(value) -> bool:
    """Python, numpy and 0-d tensor integers; bools and floats are not classes."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return (
        isinstance(value, torch.Tensor)
        and value.ndim == 0
        and not value.is_floating_point()
        and value.dtype != torch.bool
    )


@dataclass
class ScaleOutput:
    """What the sampler produced at one scale, for the consumers of `sample_scales` (the trace, previews)."""

    scale: int
    logits_BlV: torch.Tensor | None  # guided logits before top-k/top-p (a copy, kept only for the trace)
    drawn_Bl: torch.Tensor  # the tokens drawn, before any forcing
    token_map_Bhw: torch.Tensor  # the tokens kept: drawn, or forced where editing keeps the input's
    f_hat: torch.Tensor  # (B, Cv, H, W) f̂ with this scale added; updated in place by the next scale
    next_input: torch.Tensor  # (B, Cv, h, w) the next scale's input, resized from f̂


class _Trace:
    """The `trace` of a Generation: per scale, the guided logits (before filtering), drawn tokens, f̂ and next input."""

    def __init__(self) -> None:
        self.records: dict[str, list[torch.Tensor]] = {"logits": [], "drawn": [], "fhat": [], "next_input": []}

    def __call__(self, out: ScaleOutput) -> None:
        self.records["logits"].append(out.logits_BlV)
        self.records["drawn"].append(out.drawn_Bl.clone())
        self.records["fhat"].append(out.f_hat.clone())
        self.records["next_input"].append(out.next_input.clone())


def _preview(on_scale: ScaleCallback) -> Callable[[ScaleOutput], None]:
    """A public `on_scale(k, f_hat, token_map)` as a consumer."""
    return lambda out: on_scale(out.scale, out.f_hat, out.token_map_Bhw)


@torch.no_grad()
def sample_scales(
    model: VAR,
    tokenizer: Tokenizer,
    labels_B: torch.Tensor,
    settings: SamplingSettings,
    *,
    generator: torch.Generator | None = None,
    autocast_dtype: torch.dtype | None = None,
    forced: ForcedTokens | None = None,
    trace: bool = False,
    on_scale: ScaleCallback | None = None,
    refiner: VAR | None = None,
) -> Generation:
    """The sampler proper: the KV-cached next-scale loop, then the decode. `forced` = (token maps of an input
    image, per-scale keep masks (B, 1, h, w)) replaces the drawn tokens where the masks keep (zero-shot editing).
    `trace` keeps each scale's internals in `Generation.trace`; `on_scale(k, f_hat, token_map)` sees each scale.
    With a `refiner` (another transformer on the same tokenizer) and `settings.handover_scale` = h > 0, `model`
    drafts scales < h and the refiner, its cache first filled with those scales, draws scales ≥ h (CoDe-style
    collaborative decoding)."""
    require_same_token_space(tokenizer.token_space, model.token_space)
    if refiner is not None:
        require_same_token_space(tokenizer.token_space, refiner.token_space)
        if refiner.num_classes != model.num_classes:
            raise UsageError(f"the refiner has {refiner.num_classes} classes, the drafter {model.num_classes}")
    schedule, quantizer = model.schedule, tokenizer.quantizer
    K, B = schedule.num_scales, labels_B.shape[0]
    device = labels_B.device
    cast = torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    recorder = _Trace() if trace else None
    consumers = ([recorder] if recorder is not None else []) + ([_preview(on_scale)] if on_scale is not None else [])
    rows = 2 if settings.cfg > 0 else 1  # the conditional and the unconditional row of every image, until guidance
    # stops; with no guidance at all (cfg 0) the unconditional rows would change nothing and are not run
    cond_BD = model.class_embed(torch.cat((labels_B, torch.full_like(labels_B, model.config.null_class)))[: rows * B])
    x_BlC = model.start_tokens(cond_BD)
    cache = model.new_cache()
    f_hat = torch.zeros(B, quantizer.latent_channels, schedule.final_side, schedule.final_side, device=device)
    token_maps = []
    hidden_2BlC = None  # the previous scale's last-block outputs, for pruned scales
    scale_inputs = []  # the tokenizer's input of every scale after the first, (B, l, Cv): what a refiner re-reads
    for k, side in enumerate(schedule.patch_nums):
        ratio = k / (K - 1) if K > 1 else 1.0
        if refiner is not None and k == settings.handover_scale > 0:
            with cast:
                model, cond_BD, cache, hidden_2BlC = _hand_over(refiner, labels_B, scale_inputs, rows)
                x_BlC = model.scale_tokens(k, scale_inputs[-1]).repeat(rows, 1, 1)
        with cast:
            if _prunes(settings, k, K):
                previous_side = schedule.patch_nums[k - 1]
                hidden_2BlC = _pruned_hidden(
                    model, x_BlC, cond_BD, cache, hidden_2BlC, previous_side, side, settings, rows
                )
            else:
                hidden_2BlC = model.step_hidden(x_BlC, cond_BD, cache)
            guidance = settings.cfg * ratio if rows == 2 else 0.0
            # where the guidance weight is 0 (the first scale) the unconditional rows only fill the cache: no head
            head_rows = rows * B if guidance != 0 else B
            logits_2BlV = model.logits(hidden_2BlC[:head_rows], cond_BD[:head_rows])
        if head_rows > B:
            logits_BlV = (1 + guidance) * logits_2BlV[:B] - guidance * logits_2BlV[B:]
        else:
            logits_BlV = logits_2BlV
        kept_logits_BlV = logits_BlV.clone() if recorder is not None else None  # the draw filters them in place
        idx_Bl = draw_tokens(logits_BlV, settings, generator)
        if settings.more_smooth:
            tau = max(0.27 * (1 - ratio * 0.95), 0.005)  # annealed as in MaskGIT
            h_BlC = gumbel_softmax(logits_BlV.mul(1 + ratio), tau, generator) @ quantizer.codebook.weight.unsqueeze(0)
        else:
            h_BlC = quantizer.codebook(idx_Bl)
        h_BChw = h_BlC.transpose(1, 2).reshape(B, -1, side, side).float()
        idx_Bhw = idx_Bl.view(B, side, side)
        if forced is not None:
            h_BChw, idx_Bhw = _force_tokens(quantizer, forced, k, h_BChw, idx_Bhw)
        token_maps.append(idx_Bhw)
        next_BChw = quantizer.next_input(k, f_hat, h_BChw)
        for consume in consumers:
            consume(ScaleOutput(k, kept_logits_BlV, idx_Bl, idx_Bhw, f_hat, next_BChw))
        if rows == 2 and k + 1 == settings.guidance_scales < K:  # unguided from here on: one row per image
            rows, cond_BD = 1, cond_BD[:B]
            hidden_2BlC = hidden_2BlC[:B]
            for layer_cache in cache:
                layer_cache.keep_rows(B)
        if k < K - 1:
            scale_inputs.append(next_BChw.flatten(2).transpose(1, 2))
            x_BlC = model.scale_tokens(k + 1, scale_inputs[-1]).repeat(rows, 1, 1)
    with cast:
        images = tokenizer.decode_fhat(f_hat)
    images = images.float().add_(1).mul_(0.5)
    records = recorder.records if recorder is not None else {}
    return Generation(images=images, token_maps=token_maps, labels=labels_B, trace=records)


def _hand_over(refiner: VAR, labels_B: torch.Tensor, scale_inputs: list[torch.Tensor], rows: int):
    """The refiner's state at the handover: its class conditions (`rows` per image), a KV cache filled with the scales
    drawn so far (scale 0 from its start tokens, the others from the tokenizer's inputs, unpruned) and the last of
    those scales' outputs. Returns (refiner, cond, cache, hidden)."""
    null_B = torch.full_like(labels_B, refiner.config.null_class)
    cond_BD = refiner.class_embed(torch.cat((labels_B, null_B)))[: rows * len(labels_B)]
    cache = refiner.new_cache()
    hidden = refiner.step_hidden(refiner.start_tokens(cond_BD), cond_BD, cache)
    for scale, inputs in enumerate(scale_inputs[:-1], start=1):
        hidden = refiner.step_hidden(refiner.scale_tokens(scale, inputs).repeat(rows, 1, 1), cond_BD, cache)
    return refiner, cond_BD, cache, hidden


def _prunes(settings: SamplingSettings, k: int, num_scales: int) -> bool:
    """Whether scale k is one of the `prune_scales` largest (never the first) and pruning is on."""
    return settings.prune_ratio > 0 and k > 0 and k >= num_scales - settings.prune_scales


def _force_tokens(quantizer, forced: ForcedTokens, k: int, h_BChw: torch.Tensor, idx_Bhw: torch.Tensor):
    """Zero-shot editing: the input image's tokens (and their embeddings) where scale k's keep mask says so."""
    given_maps, masks = forced
    force_B1hw, given_Bhw = masks[k], given_maps[k].view_as(idx_Bhw)
    h_BChw = torch.where(force_B1hw, quantizer.embed(given_maps[k]).float(), h_BChw)
    return h_BChw, torch.where(force_B1hw[:, 0], given_Bhw, idx_Bhw)


def _pruned_hidden(
    model: VAR,
    x_2BlC,
    cond_2BD,
    cache,
    previous_2BlC,
    previous_side: int,
    side: int,
    settings: SamplingSettings,
    rows: int = 2,
):
    """FastVAR-style token pruning of one large scale: only the tokens whose input stands out most from the scale's
    mean (the conditional row decides for both CFG rows of an image) go through the transformer; the others take
    the previous scale's last-block outputs, upsampled (nearest) to this grid. Returns (2B, l, C) outputs (B, l, C
    once guidance has stopped: `rows` = 1)."""
    twoB, l, C = x_2BlC.shape
    keep = max(1, round(l * (1 - settings.prune_ratio)))
    x_BlC = x_2BlC[: twoB // rows]
    score_Bl = (x_BlC - x_BlC.mean(dim=1, keepdim=True)).float().norm(dim=-1)
    kept_2Bk = score_Bl.topk(keep, dim=1).indices.sort(dim=1).values.repeat(rows, 1)
    index_2BkC = kept_2Bk.unsqueeze(-1).expand(-1, -1, C)
    hidden_2BkC = model.step_hidden(x_2BlC.gather(1, index_2BkC), cond_2BD, cache)
    previous_2BCs = previous_2BlC.transpose(1, 2).reshape(twoB, -1, previous_side, previous_side)
    upsampled = torch.nn.functional.interpolate(previous_2BCs.float(), size=(side, side), mode="nearest")
    full_2BlC = upsampled.flatten(2).transpose(1, 2).to(hidden_2BkC.dtype)
    return full_2BlC.scatter(1, index_2BkC, hidden_2BkC)


def make_generator(seed: int | None, device) -> torch.Generator | None:
    """A generator on `device` seeded with `seed` (the official sampler's g_seed), or None for the global RNG."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise UsageError(f"seed must be an integer in [0, 2^63), got {seed!r}")
    return torch.Generator(device=device).manual_seed(seed)


def generate(
    model: VAR,
    tokenizer: Tokenizer,
    labels: LabelsLike = None,
    settings: SamplingSettings | str | None = None,
    *,
    seed: int | None = None,
    batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    trace: bool = False,
    on_scale: ScaleCallback | None = None,
    refiner: VAR | None = None,
    **overrides,
) -> Generation:
    """Class-conditional images.

    `labels`: a list/tensor of classes, one int for all (`batch_size` copies; negative → unconditional), or None for
    `batch_size` random classes. `settings`: a `SamplingSettings`, a preset name ("fid", "demo", …) or None for the
    official sampler's defaults; keywords cfg=, top_k=, top_p=, more_smooth= override single fields.
    `autocast_dtype=torch.bfloat16` runs the transformer and decoder in bf16 (fp32 by default, for parity). `trace`
    keeps per-scale logits, drawn tokens, f̂ and next inputs; `on_scale(k, f_hat, token_map)` is called after each
    scale (previews). `refiner` with `handover_scale` = h: `model` drafts the scales before h, the refiner the rest."""
    settings = SamplingSettings.resolve(settings, **overrides)
    device = model.start_pos.device
    generator = make_generator(seed, device)
    labels_B = resolve_labels(labels, model.num_classes, batch_size, device, generator)
    return sample_scales(
        model, tokenizer, labels_B, settings, generator=generator, autocast_dtype=autocast_dtype, trace=trace,
        on_scale=on_scale, refiner=refiner,
    )  # fmt: skip
