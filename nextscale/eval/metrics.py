"""Evaluation of a tokenizer (PSNR, per-scale codebook usage) and a transformer (per-scale loss and accuracy).

Both functions take a dataset of (image in [-1, 1], label) and can be split across processes (`rank`, `world_size`):
each process evaluates every world_size-th image and the sums are all-reduced when a process group exists.
Letters: B batch, L all tokens, K scales, V vocabulary.
"""

from __future__ import annotations

import torch

from nextscale.distributed import sum_over_processes
from nextscale.model.raster import RasterTransformer
from nextscale.model.var import VAR, cross_entropy_per_token
from nextscale.progress import progress_bar
from nextscale.tokenizer.tokenizer import Tokenizer


def psnr(images_BCHW: torch.Tensor, reference_BCHW: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (peak 1 on the [0, 1] scale)."""
    mse_B = ((images_BCHW.clamp(-1, 1) - reference_BCHW) / 2).square().flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse_B.clamp_min(1e-10))


def _batches(dataset, limit: int | None, batch_size: int, rank: int, world_size: int, device, show: bool):
    count = len(dataset) if limit is None else min(limit, len(dataset))
    indices = list(range(rank, count, world_size))
    bar = progress_bar(total=len(indices), description="evaluating", unit="img", enabled=show, leave=False)
    for begin in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[begin : begin + batch_size]]
        bar.update(len(items))
        yield torch.stack([image for image, _ in items]).to(device), torch.tensor([y for _, y in items], device=device)
    bar.close()


@torch.no_grad()
def evaluate_tokenizer(
    tokenizer: Tokenizer,
    dataset,
    *,
    batch_size: int = 256,
    limit: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = False,
) -> dict[str, float]:
    """Mean PSNR (dB) and L1 of the reconstructions, PSNR after each scale, and per-scale codebook usage: the % of
    the vocabulary that scale's token maps use at least once over the evaluated images."""
    was_training = tokenizer.training
    tokenizer.eval()
    device = next(tokenizer.parameters()).device
    K, V = tokenizer.schedule.num_scales, tokenizer.vocab_size
    sums = {
        "psnr_K": torch.zeros(K, device=device),
        "l1": torch.zeros((), device=device),
        "seen": torch.zeros((), device=device),
        "hits_KV": torch.zeros(K, V, device=device),
    }
    for images, _ in _batches(dataset, limit, batch_size, rank, world_size, device, progress):
        token_maps, fhat_list = tokenizer.encode_with_fhat(images)
        for k, f_hat in enumerate(fhat_list):
            reconstruction = tokenizer.decode_fhat(f_hat)
            sums["psnr_K"][k] += psnr(reconstruction, images).sum()
        sums["l1"] += (reconstruction - images).abs().flatten(1).mean(1).sum()
        sums["seen"] += len(images)
        for k, idx in enumerate(token_maps):
            sums["hits_KV"][k] += torch.bincount(idx.flatten(), minlength=V).float()
    tokenizer.train(was_training)
    sums = sum_over_processes(sums)
    seen = sums["seen"].clamp_min(1)
    psnr_K = sums["psnr_K"] / seen
    out = {"psnr": float(psnr_K[-1]), "l1": float(sums["l1"] / seen), "images": float(sums["seen"])}
    used_K = (sums["hits_KV"] > 0).float().mean(1) * 100
    for side, used, value in zip(tokenizer.config.patch_nums, used_K, psnr_K):
        out[f"usage_{side}x{side}"] = float(used)
        out[f"psnr_after_{side}x{side}"] = float(value)
    out["usage_all"] = float((sums["hits_KV"].sum(0) > 0).float().mean() * 100)
    return out


@torch.no_grad()
def evaluate_transformer(
    model: VAR,
    tokenizer: Tokenizer,
    dataset,
    *,
    batch_size: int = 256,
    limit: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Teacher-forced validation with the true labels (no dropout): L_mean, L_tail (last scale), acc_mean, acc_tail
    (top-1 %) and per-scale loss/accuracy, averaged over tokens as the official trainer does."""
    was_training = model.training
    model.eval()
    device = model.pos_embed.device
    schedule = model.schedule
    sums = {
        "ce_K": torch.zeros(schedule.num_scales, device=device),
        "correct_K": torch.zeros(schedule.num_scales, device=device),
        "seen": torch.zeros((), device=device),
    }
    for images, labels in _batches(dataset, limit, batch_size, rank, world_size, device, progress):
        token_maps = tokenizer.encode(images)
        targets_BL = torch.cat([t.flatten(1) for t in token_maps], dim=1)
        cast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
        with cast:
            if isinstance(model, RasterTransformer):  # next-token baseline: the targets are its own inputs
                logits_BLV = model(labels, targets_BL)
            else:
                logits_BLV = model(labels, tokenizer.teacher_input(token_maps))
        ce_BL = cross_entropy_per_token(logits_BLV.float(), targets_BL)
        correct_BL = (logits_BLV.argmax(-1) == targets_BL).float()
        for k in range(schedule.num_scales):
            begin, end = schedule.span(k)
            sums["ce_K"][k] += ce_BL[:, begin:end].sum()
            sums["correct_K"][k] += correct_BL[:, begin:end].sum()
        sums["seen"] += len(images)
    model.train(was_training)
    sums = sum_over_processes(sums)
    lengths_K = torch.tensor(schedule.lengths, device=device, dtype=torch.float)
    tokens_K = sums["seen"].clamp_min(1) * lengths_K
    ce_K, acc_K = sums["ce_K"] / tokens_K, sums["correct_K"] / tokens_K * 100
    out = {
        "L_mean": float(sums["ce_K"].sum() / tokens_K.sum()),
        "L_tail": float(ce_K[-1]),
        "acc_mean": float(sums["correct_K"].sum() / tokens_K.sum() * 100),
        "acc_tail": float(acc_K[-1]),
        "images": float(sums["seen"]),
    }
    for side, loss, acc in zip(schedule.patch_nums, ce_K, acc_K):
        out[f"scale_{side}x{side}_loss"] = float(loss)
        out[f"scale_{side}x{side}_acc"] = float(acc)
    return out
