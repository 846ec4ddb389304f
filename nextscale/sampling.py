"""Next-scale sampling with a KV cache, classifier-free guidance and top-k/top-p; zero-shot editing on top of it.

Each step feeds one scale's tokens (2B rows: conditional, then unconditional) through the transformer, mixes the two
halves with a guidance weight that grows linearly from 0 at the first scale to `cfg` at the last, samples that
scale's token map and adds it to the tokenizer's f̂, whose resized copy is the next scale's input.

Random numbers come from one `torch.Generator` seeded with `seed`, drawn in the official sampler's order (labels,
then per scale: the token draw, then the Gumbel noise when `more_smooth`), so the same weights, settings and seed give
the official code's tokens. Letters: B batch, l one scale's tokens, V vocabulary, Cv latent channels, h/w grid.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from nextscale.model.var import VAR
from nextscale.tokenizer.tokenizer import Tokenizer

LabelsLike = int | Sequence[int] | torch.Tensor | None
# called after each scale with (scale index, f̂ so far (B, Cv, H, W), that scale's token map (B, h, w)); for previews
ScaleCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass(frozen=True)
class SamplingSettings:
    cfg: float = 1.5  # guidance at the last scale; 0 disables guidance
    top_k: int = 0  # keep the k most likely tokens (0: all)
    top_p: float = 0.0  # keep the smallest set with this much probability mass (0: all)
    more_smooth: bool = False  # feed Gumbel-softmax-smoothed embeddings forward instead of the drawn tokens

    def __post_init__(self) -> None:
        if self.top_k < 0:
            raise ValueError(f"top_k must be ≥ 0, got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")


# The official README's settings: FID evaluation, and the demo's look.
SAMPLING_PRESETS: dict[str, SamplingSettings] = {
    "fid": SamplingSettings(cfg=1.5, top_k=900, top_p=0.96, more_smooth=False),
    "quality": SamplingSettings(cfg=4.0, top_k=900, top_p=0.95, more_smooth=True),
}


@dataclass
class Generation:
    images: torch.Tensor  # (B, 3, H, W) in [0, 1]
    token_maps: list[torch.Tensor]  # K × (B, h_k, w_k): the tokens that built the image
    labels: torch.Tensor  # (B,) the classes used (num_classes = unconditional)
    trace: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # per-scale internals when asked for


def sample_top_k_top_p(
    logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw one token per position; masks `logits_BlV` in place (as the official sampler, whose Gumbel smoothing then
    sees the masked logits). Top-k keeps every value ≥ the k-th largest (ties survive); top-p drops the tokens whose
    ascending cumulative probability is ≤ 1 − top_p, always keeping the most likely one. Returns (B, l) int64."""
    B, l, V = logits_BlV.shape
    if top_k > 0:
        threshold_Bl1 = logits_BlV.topk(min(top_k, V), largest=True, sorted=False, dim=-1)[0].amin(dim=-1, keepdim=True)
        logits_BlV.masked_fill_(logits_BlV < threshold_Bl1, -torch.inf)
    if top_p > 0:
        sorted_BlV, order_BlV = logits_BlV.sort(dim=-1, descending=False)
        drop_sorted = sorted_BlV.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        drop_sorted[..., -1:] = False
        logits_BlV.masked_fill_(drop_sorted.scatter(order_BlV.ndim - 1, order_BlV, drop_sorted), -torch.inf)
    probs_NV = logits_BlV.softmax(dim=-1).view(-1, V)
    return torch.multinomial(probs_NV, num_samples=1, replacement=True, generator=generator).view(B, l)


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    gumbels = (
        -torch.empty_like(logits, memory_format=torch.legacy_contiguous_format).exponential_(generator=generator).log()
    )
    return ((logits + gumbels) / tau).softmax(dim=-1)


def resolve_labels(
    labels: LabelsLike, num_classes: int, batch_size: int | None, device, generator: torch.Generator | None
) -> torch.Tensor:
    """A list/tensor is used as is; one int fills the batch (negative: unconditional); None draws random classes."""
    if labels is None:
        if batch_size is None or batch_size <= 0:
            raise ValueError("random labels need a positive batch_size")
        uniform = torch.full((1, num_classes), 1.0 / num_classes, device=device)
        return torch.multinomial(uniform, num_samples=batch_size, replacement=True, generator=generator).reshape(-1)
    if isinstance(labels, int):
        size = 1 if batch_size is None else batch_size
        if size <= 0:
            raise ValueError(f"batch_size must be positive, got {size}")
        return torch.full((size,), num_classes if labels < 0 else labels, dtype=torch.int64, device=device)
    labels_B = torch.as_tensor(labels, dtype=torch.int64, device=device).reshape(-1)
    if labels_B.numel() == 0:
        raise ValueError("labels are empty")
    if batch_size is not None and batch_size != labels_B.numel():
        raise ValueError(f"{labels_B.numel()} labels given for batch_size {batch_size}")
    bad = (labels_B < 0) | (labels_B > num_classes)
    if bad.any():
        raise ValueError(
            f"class {labels_B[bad][0].item()} is outside [0, {num_classes}) ({num_classes} means unconditional)"
        )
    return labels_B


def _keep_masks(keep_mask: torch.Tensor, batch_size: int, sides: Sequence[int]) -> list[torch.Tensor]:
    """Finest-grid keep mask (h, w) or (B, h, w) → per-scale bool masks (B, 1, h_k, w_k), as the official notebook:
    bilinear resize, threshold 0.5, and the tiny first scales (≤ 3 tokens) always kept."""
    mask = keep_mask.float()
    if mask.dim() == 2:
        mask = mask.unsqueeze(0).expand(batch_size, -1, -1)
    out = []
    for side in sides:
        force = F.interpolate(mask.unsqueeze(1), size=(side, side), mode="bilinear", align_corners=False).gt(0.5)
        if side * side <= 3:
            force.fill_(True)
        out.append(force)
    return out


@torch.no_grad()
def _next_scale_loop(
    model: VAR,
    tokenizer: Tokenizer,
    labels_B: torch.Tensor,
    settings: SamplingSettings,
    generator: torch.Generator | None,
    autocast_dtype: torch.dtype | None,
    keep: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None,
    trace: bool = False,
    on_scale: ScaleCallback | None = None,
):
    """The sampler proper. `keep` = (the input image's token maps, per-scale keep masks) for editing."""
    schedule, quantizer = model.schedule, tokenizer.quantizer
    K, B = schedule.num_scales, labels_B.shape[0]
    device = labels_B.device
    cast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype) if autocast_dtype is not None else nullcontext()
    )
    records: dict[str, list[torch.Tensor]] = {"logits": [], "drawn": [], "fhat": [], "next_input": []}
    cond_BD = model.class_embed(torch.cat((labels_B, torch.full_like(labels_B, model.config.null_class))))
    x_BlC = model.start_tokens(cond_BD)
    cache = model.new_cache()
    f_hat = torch.zeros(B, quantizer.latent_channels, schedule.final_side, schedule.final_side, device=device)
    token_maps = []
    codebook_VC = quantizer.codebook.weight
    for k, side in enumerate(schedule.patch_nums):
        ratio = k / (K - 1) if K > 1 else 1.0
        with cast:
            logits_2BlV = model.step(x_BlC, cond_BD, cache)
        guidance = settings.cfg * ratio
        logits_BlV = (1 + guidance) * logits_2BlV[:B] - guidance * logits_2BlV[B:]
        if trace:
            records["logits"].append(logits_BlV.clone())
        idx_Bl = sample_top_k_top_p(logits_BlV, settings.top_k, settings.top_p, generator)
        if settings.more_smooth:
            tau = max(0.27 * (1 - ratio * 0.95), 0.005)  # annealed as in MaskGIT
            h_BlC = gumbel_softmax(logits_BlV.mul(1 + ratio), tau, generator) @ codebook_VC.unsqueeze(0)
        else:
            h_BlC = quantizer.codebook(idx_Bl)
        h_BChw = h_BlC.transpose(1, 2).reshape(B, -1, side, side).float()
        idx_Bhw = idx_Bl.view(B, side, side)
        if trace:
            records["drawn"].append(idx_Bl.clone())
        if keep is not None:
            given_maps, masks = keep
            force_B1hw = masks[k]
            h_BChw = torch.where(force_B1hw, quantizer.embed(given_maps[k]).float(), h_BChw)
            idx_Bhw = torch.where(force_B1hw[:, 0], given_maps[k].view(B, side, side), idx_Bhw)
        token_maps.append(idx_Bhw)
        next_BChw = quantizer.next_input(k, f_hat, h_BChw)
        if trace:
            records["fhat"].append(f_hat.clone())
            records["next_input"].append(next_BChw.clone())
        if on_scale is not None:
            on_scale(k, f_hat, idx_Bhw)
        if k < K - 1:
            x_BlC = model.scale_tokens(k + 1, next_BChw.flatten(2).transpose(1, 2)).repeat(2, 1, 1)
    with cast:
        images = tokenizer.decode_fhat(f_hat)
    images = images.float().add_(1).mul_(0.5)
    return images, token_maps, (records if trace else {})


def _make_generator(seed: int | None, device) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(int(seed))


def generate(
    model: VAR,
    tokenizer: Tokenizer,
    labels: LabelsLike = None,
    *,
    cfg: float = 1.5,
    top_k: int = 0,
    top_p: float = 0.0,
    more_smooth: bool = False,
    seed: int | None = None,
    batch_size: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    trace: bool = False,
    on_scale: ScaleCallback | None = None,
) -> Generation:
    """Class-conditional images. `labels`: a list/tensor of classes, one int for all (`batch_size` copies; negative
    → unconditional), or None for `batch_size` random classes. `autocast_dtype=torch.bfloat16` runs the transformer
    and decoder in bf16 (fp32 by default, for parity). `trace` keeps per-scale logits, f̂ and next inputs."""
    settings = SamplingSettings(cfg=cfg, top_k=top_k, top_p=top_p, more_smooth=more_smooth)
    _check_pair(model, tokenizer)
    device = model.start_pos.device
    generator = _make_generator(seed, device)
    labels_B = resolve_labels(labels, model.num_classes, batch_size, device, generator)
    images, token_maps, records = _next_scale_loop(
        model, tokenizer, labels_B, settings, generator, autocast_dtype, trace=trace, on_scale=on_scale
    )
    return Generation(images=images, token_maps=token_maps, labels=labels_B, trace=records)


def edit(
    model: VAR,
    tokenizer: Tokenizer,
    images: torch.Tensor,
    keep_mask: torch.Tensor,
    labels: LabelsLike = None,
    *,
    cfg: float = 1.5,
    top_k: int = 0,
    top_p: float = 0.0,
    more_smooth: bool = False,
    seed: int | None = None,
    autocast_dtype: torch.dtype | None = None,
    trace: bool = False,
    on_scale: ScaleCallback | None = None,
) -> Generation:
    """Zero-shot in-painting, out-painting and class-conditional editing.

    `images` (B, 3, H, W) in [-1, 1]; `keep_mask` on the finest token grid, (h, w) or (B, h, w), 1 = keep the
    image's token, 0 = generate. At every scale the image's tokens are forced where the resized mask keeps (the
    coarsest scale always), the rest is sampled. `labels=None` uses the null class (plain in/out-painting); a class
    edits the generated region towards it."""
    settings = SamplingSettings(cfg=cfg, top_k=top_k, top_p=top_p, more_smooth=more_smooth)
    _check_pair(model, tokenizer)
    device = model.start_pos.device
    B, final = images.shape[0], model.schedule.final_side
    if keep_mask.shape[-2:] != (final, final) or keep_mask.dim() not in (2, 3):
        raise ValueError(f"keep_mask must be ({final}, {final}) or (B, {final}, {final}), got {tuple(keep_mask.shape)}")
    if keep_mask.dim() == 3 and keep_mask.shape[0] != B:
        raise ValueError(f"keep_mask has {keep_mask.shape[0]} masks for {B} images")
    generator = _make_generator(seed, device)
    labels_B = resolve_labels(model.config.null_class if labels is None else labels, model.num_classes, B, device, None)
    given_maps = tokenizer.encode(images.to(device))
    masks = _keep_masks(keep_mask.to(device), B, model.schedule.patch_nums)
    out, token_maps, records = _next_scale_loop(
        model,
        tokenizer,
        labels_B,
        settings,
        generator,
        autocast_dtype,
        keep=(given_maps, masks),
        trace=trace,
        on_scale=on_scale,
    )
    return Generation(images=out, token_maps=token_maps, labels=labels_B, trace=records)


def _check_pair(model: VAR, tokenizer: Tokenizer) -> None:
    mc, tc = model.config, tokenizer.config
    if (mc.vocab_size, mc.latent_channels, mc.patch_nums) != (tc.vocab_size, tc.latent_channels, tc.patch_nums):
        raise ValueError(
            f"tokenizer (vocab {tc.vocab_size}, {tc.latent_channels} channels, scales {tc.patch_nums}) does not fit "
            f"the transformer (vocab {mc.vocab_size}, {mc.latent_channels} channels, scales {mc.patch_nums})"
        )
