"""nextscale against the official VAR code, side by side in one process: the same random weights, the same tokens,
and images/s of sampling and training, interleaved repeats (min and median).

    python benchmarks/official_side_by_side.py --official-src ../VAR --batch-sizes 1,4,8   # d16, 256 px
    python benchmarks/official_side_by_side.py --official-src ../VAR --depth 8 --batch-sizes 2 --repeats 2
    python benchmarks/official_side_by_side.py                                           # nextscale's own figures

`--official-src` is a checkout of FoundationVision/VAR (it is imported from there, never copied here). Weights: the
official `init_weights` for the transformer and PyTorch's default initialisation for the tokenizer, loaded into
both implementations through `nextscale.convert`. The run first checks that both draw the same tokens for the same
seed (fp32), then times, for each precision:
- sampling (cfg, top-k, top-p of the FID setting) with decoding: the official sampler under autocast (its demo's
  way) against nextscale prepared for inference (`nextscale.inference`: weights cast once, NHWC tokenizer);
- the decoder alone (the official `fhat_to_img` against nextscale's);
- a training step (teacher-forced loss, backward, AdamW) of a `--train-depth` model: images/s and peak memory.
It also measures the machine's matmul peak in each precision and prints which fraction of it the transformer
reaches while sampling (its FLOPs counted with torch's FlopCounterMode). bf16 runs are skipped on a CPU without
native bf16 matrix units (there bf16 is several times slower than fp32), unless `--force-bf16`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from nextscale import VAR, Tokenizer, VARConfig, generate, tokenizer_preset
from nextscale.convert import to_official_tokenizer, tokenizer_from_official, var_from_official
from nextscale.inference import prepare_for_inference
from nextscale.sampling import SAMPLING_PRESETS
from nextscale.timing import interleaved_times
from nextscale.train.var_task import teacher_forced_loss

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


# ---- the official code ----------------------------------------------------------------------------------------------


def import_official(src: Path):
    if not (src / "models" / "var.py").is_file():
        raise SystemExit(f"--official-src {src}: not a checkout of FoundationVision/VAR (no models/var.py)")
    sys.path.insert(0, str(src))
    import models  # the official package

    return models


def build_official(models, tokenizer: Tokenizer, depth: int, num_classes: int, device: str):
    """The official VQVAE (our tokenizer's weights) and VAR (its own init_weights)."""
    torch.manual_seed(0)
    vae, var = models.build_vae_var(
        device=device,
        patch_nums=tokenizer.config.patch_nums,
        V=tokenizer.vocab_size,
        Cvae=tokenizer.latent_channels,
        ch=tokenizer.config.base_channels,
        share_quant_resi=tokenizer.config.num_phis,
        num_classes=num_classes,
        depth=depth,
        flash_if_available=False,
        fused_if_available=False,
    )
    vae.load_state_dict(to_official_tokenizer(tokenizer.cpu()), strict=True)
    return vae.to(device).eval(), var.to(device).eval()


def official_tokens(models, var, labels, seed: int, settings) -> list[torch.Tensor]:
    """The official sampler's drawn tokens per scale (its sampling helper, wrapped to record them)."""
    drawn, original = [], models.var.sample_with_top_k_top_p_

    def recording(*args, **kwargs):
        idx = original(*args, **kwargs)
        drawn.append(idx[:, :, 0].clone())
        return idx

    models.var.sample_with_top_k_top_p_ = recording
    try:
        with torch.inference_mode():
            var.autoregressive_infer_cfg(
                len(labels), labels, g_seed=seed, cfg=settings.cfg, top_k=settings.top_k, top_p=settings.top_p
            )
    finally:
        models.var.sample_with_top_k_top_p_ = original
    return drawn


# ---- measurements ---------------------------------------------------------------------------------------------------


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved(named: dict, repeats: int, device: str) -> dict[str, list[float]]:
    """Each function once to warm up, then `repeats` rounds of all of them in turn, printing each round."""

    def report(round_index: int, times: dict[str, list[float]]) -> None:
        done = ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items())
        print(f"  round {round_index + 1}/{repeats}: {done}", flush=True)

    return interleaved_times(named, repeats, synchronize=lambda: synchronize(device), on_round=report)


def matmul_peak(dtype: torch.dtype, device: str, size: int = 2048) -> float:
    """FLOP/s of a large square matmul: the practical peak of this machine in `dtype`."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = min(timed(lambda: a @ b, device) for _ in range(4))
    return 2 * size**3 / seconds


def native_bf16(device: str) -> bool:
    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16"))


def peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak RSS (Linux: KiB)


def describe(times: list[float], images: int) -> str:
    best, median = min(times), statistics.median(times)
    return f"min {best:7.2f} s  median {median:7.2f} s  {images / best:8.2f} images/s"


# ---- main -----------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-src", type=Path, help="checkout of FoundationVision/VAR (optional)")
    parser.add_argument("--depth", type=int, default=16, help="transformer depth (width 64·depth, as released)")
    parser.add_argument("--tokenizer", default="vqvae-f16-c160", help="tokenizer preset (the released 256-px one)")
    parser.add_argument("--tokenizer-channels", type=int, help="override its base channels (160) for a quick run")
    parser.add_argument("--batch-sizes", default="8", help="comma-separated sampling and decoder batch sizes")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated: fp32, bf16")
    parser.add_argument("--force-bf16", action="store_true", help="time bf16 even without native bf16 matmuls")
    parser.add_argument("--train-depth", type=int, default=8, help="depth of the training-step model (0: skip)")
    parser.add_argument("--train-batch-size", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="also time nextscale with torch.compile'd blocks")
    parser.add_argument("--without-fast", action="store_true", help="also time nextscale without --fast")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json", type=Path, help="also write every timing round here (e.g. docs/data/side_by_side.json)"
    )
    args = parser.parse_args()
    try:
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch-sizes {args.batch_sizes}: comma-separated whole numbers, e.g. 1,4,8")
    if min(batch_sizes) < 1:
        parser.error(f"--batch-sizes {args.batch_sizes}: every batch size must be positive")
    device = args.device
    settings = SAMPLING_PRESETS["fid"]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batches {batch_sizes}, "
          f"d{args.depth}, tokenizer {args.tokenizer}, sampling {settings}")  # fmt: skip

    torch.manual_seed(args.seed)
    overrides = {"base_channels": args.tokenizer_channels} if args.tokenizer_channels else {}
    tokenizer = Tokenizer(tokenizer_preset(args.tokenizer, **overrides))
    models = import_official(args.official_src) if args.official_src else None
    if models is not None:
        official_vae, official_var = build_official(models, tokenizer, args.depth, 1000, device)
        var_state = {k: v.cpu() for k, v in official_var.state_dict().items()}
        model = var_from_official(var_state, tokenizer.token_space, device=device)
        tokenizer = tokenizer_from_official(to_official_tokenizer(tokenizer), tokenizer.config.patch_nums, device)
    else:
        official_vae = official_var = None
        model = VAR(VARConfig(depth=args.depth), tokenizer.token_space).to(device).eval()
        tokenizer = tokenizer.to(device).eval()
    rows, records = [], []
    for B in batch_sizes:
        rows += batch_rows(args, B, settings, models, tokenizer, model, official_vae, official_var, records)
    if args.train_depth:
        rows += training_rows(args, models, tokenizer, device, records)
    if args.json:
        write_records(args.json, records)
    print()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:{width}s}  {value}")


def batch_rows(
    args, B: int, settings, models, tokenizer, model, official_vae, official_var, records: list[dict]
) -> list[tuple[str, str]]:
    """Same tokens, then sampling, the decoder and the transformer's share of the matmul peak at batch B; the raw
    times go into `records`."""
    device, rows = args.device, []
    labels = torch.arange(B, device=device) * 37 % 1000

    # ---- the same tokens ------------------------------------------------------------------------------------------
    if models is not None:
        ours = generate(model, tokenizer, labels, settings, seed=args.seed, trace=True).trace["drawn"]
        theirs = official_tokens(models, official_var, labels, args.seed, settings)
        differ = sum(int((a.reshape(B, -1) != b).sum()) for a, b in zip(ours, theirs))
        total = sum(b.numel() for b in theirs)
        print(f"batch {B}, same seed, fp32: {total - differ} of {total} drawn tokens identical to the official's")
        rows.append((f"same tokens b{B}", f"{total - differ} of {total}"))
        records.append({"part": "same tokens", "batch": B, "identical": total - differ, "total": total})

    # ---- sampling ---------------------------------------------------------------------------------------------------
    flops = FlopCounterMode(display=False)
    with flops, torch.no_grad():
        _transformer_only(model, labels)
    transformer_flops = flops.get_total_flops()
    for name in args.precisions.split(","):
        dtype = PRECISIONS[name]
        if dtype != torch.float32 and not native_bf16(device) and not args.force_bf16:
            print(f"{name}: skipped, this {device} has no native {name} matmuls (--force-bf16 to time it anyway)")
            continue
        peak = matmul_peak(dtype, device)
        print(f"{name}: matmul peak {peak / 1e12:.3f} TFLOP/s")
        fast_tokenizer, fast_model = prepare_for_inference(
            copy.deepcopy(tokenizer), copy.deepcopy(model), dtype=None if dtype == torch.float32 else dtype
        )
        cast = contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device.split(":")[0], dtype=dtype)
        named = {}
        if models is not None:

            def official_sample(cast=cast):
                with torch.inference_mode(), cast:
                    official_var.autoregressive_infer_cfg(B, labels, g_seed=args.seed, cfg=settings.cfg,
                                                          top_k=settings.top_k, top_p=settings.top_p)  # fmt: skip

            named["official"] = official_sample
        named["nextscale"] = lambda m=fast_model, t=fast_tokenizer: generate(m, t, labels, settings, seed=args.seed)
        if args.without_fast:  # the same weights as loaded, under autocast: what --fast saves
            autocast_dtype = None if dtype == torch.float32 else dtype
            named["nextscale without fast"] = lambda cast_to=autocast_dtype: generate(
                model, tokenizer, labels, settings, seed=args.seed, autocast_dtype=cast_to
            )
        if args.compile:
            compiled = prepare_for_inference(copy.deepcopy(fast_tokenizer), copy.deepcopy(fast_model), compile=True)
            named["nextscale+compile"] = lambda m=compiled[1], t=compiled[0]: generate(m, t, labels, settings, seed=0)
        print(f"{name} sampling, {B} images per run:")
        times = interleaved(named, args.repeats, device)
        records.append({"part": "sampling", "precision": name, "batch": B, "seconds": times})
        for label, values in times.items():
            rows.append((f"sampling {name} b{B} {label}", describe(values, B)))
        if "official" in times:
            ratio = min(times["official"]) / min(times["nextscale"])
            rows.append((f"sampling {name} b{B} nextscale / official", f"{ratio:.2f}x"))
        rows.append((f"sampling {name} b{B} peak memory (process)", f"{peak_memory_mb(device):.0f} MiB"))

        f_hat = torch.randn(B, tokenizer.latent_channels, 16, 16, device=device)
        decoders = {"nextscale": lambda t=fast_tokenizer, f=f_hat: t.decode_fhat(f)}
        if models is not None:

            def official_decode(cast=cast, f=f_hat):
                with torch.inference_mode(), cast:
                    official_vae.fhat_to_img(f)

            decoders = {"official": official_decode, **decoders}
        with torch.no_grad():
            times = interleaved(decoders, args.repeats, device)
        records.append({"part": "decoder", "precision": name, "batch": B, "seconds": times})
        for label, values in times.items():
            rows.append((f"decoder {name} b{B} {label}", describe(values, B)))
        if "official" in times:
            ratio = min(times["official"]) / min(times["nextscale"])
            rows.append((f"decoder {name} b{B} nextscale / official", f"{ratio:.2f}x"))

        with torch.no_grad():
            run = lambda m=fast_model: _transformer_only(m, labels)  # noqa: E731
            transformer_time = min(timed(run, device) for _ in range(2))
        records.append({"part": "transformer", "precision": name, "batch": B, "flops": transformer_flops,
                        "seconds": transformer_time, "matmul_peak_flops_per_s": peak})  # fmt: skip
        rows.append((f"transformer {name} b{B} fraction of matmul peak",
                     f"{transformer_flops / transformer_time / peak:.1%} ({transformer_flops / 1e12:.2f} TFLOP in "
                     f"{transformer_time:.2f} s)"))  # fmt: skip
    return rows


def write_records(path: Path, records: list[dict]) -> None:
    """The run's raw numbers (every round of every timing) with the command and the machine, as JSON."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    names = [line.split(":", 1)[1].strip() for line in info if line.startswith("model name")]
    cpu = names[0] if names else platform.machine()
    run = {"command": "python benchmarks/official_side_by_side.py " + " ".join(sys.argv[1:]),
           "machine": {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__},
           "records": records}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run, indent=1) + "\n")
    print(f"raw numbers: {path}")


def _transformer_only(model: VAR, labels: torch.Tensor) -> None:
    """The transformer's share of sampling: every scale through the blocks and the head (CFG rows), no tokenizer."""
    B, schedule = len(labels), model.schedule
    cond = model.class_embed(torch.cat((labels, torch.full_like(labels, model.config.null_class))))
    cache, x = model.new_cache(), model.start_tokens(cond)
    for k in range(schedule.num_scales):
        model.step(x, cond, cache)
        if k + 1 < schedule.num_scales:
            inputs = torch.zeros(B, schedule.lengths[k + 1], model.token_space.latent_channels, device=labels.device)
            x = model.scale_tokens(k + 1, inputs).repeat(2, 1, 1)


def training_rows(args, models, tokenizer: Tokenizer, device: str, records: list[dict]) -> list[tuple[str, str]]:
    """One optimizer step of a d`train_depth` transformer on the tokenizer's token maps, both implementations."""
    B, depth = args.train_batch_size, args.train_depth
    images = torch.rand(B, 3, tokenizer.config.image_size, tokenizer.config.image_size, device=device) * 2 - 1
    labels = torch.arange(B, device=device) % 1000
    with torch.no_grad():
        token_maps = tokenizer.encode(images)
    rows = []
    for name in args.precisions.split(","):
        dtype = PRECISIONS[name]
        if dtype != torch.float32 and not native_bf16(device) and not args.force_bf16:
            continue
        cast = contextlib.nullcontext() if dtype == torch.float32 else torch.autocast(device.split(":")[0], dtype=dtype)
        named = {"nextscale": _our_training_step(tokenizer, token_maps, labels, depth, cast, device)}
        if models is not None:
            named = {"official": _official_training_step(models, tokenizer, token_maps, labels, depth, cast, device)}
            named["nextscale"] = _our_training_step(tokenizer, token_maps, labels, depth, cast, device)
        print(f"{name} training step, d{depth}, batch {B}:")
        times = interleaved(named, args.repeats, device)
        records.append({"part": "training", "precision": name, "batch": B, "depth": depth, "seconds": times,
                        "peak_memory_mb": peak_memory_mb(device)})  # fmt: skip
        for label, values in times.items():
            rows.append((f"training {name} d{depth} {label}", describe(values, B)))
        if "official" in times:
            rows.append(
                (f"training {name} nextscale / official", f"{min(times['official']) / min(times['nextscale']):.2f}x")
            )
        rows.append((f"training {name} peak memory (process)", f"{peak_memory_mb(device):.0f} MiB"))
    return rows


def _our_training_step(tokenizer, token_maps, labels, depth: int, cast, device: str):
    torch.manual_seed(0)
    model = VAR(VARConfig(depth=depth), tokenizer.token_space).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)

    def step():
        loss, _ = teacher_forced_loss(model, tokenizer, token_maps, labels, autocast=cast)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _official_training_step(models, tokenizer, token_maps, labels, depth: int, cast, device: str):
    """The official trainer's step: teacher input from its quantizer, forward under autocast, mean CE, clip, AdamW."""
    _, model = build_official(models, tokenizer, depth, 1000, device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=True)
    quantizer = model.vae_quant_proxy[0]
    idx_list = [m.flatten(1) for m in token_maps]
    targets = torch.cat(idx_list, dim=1)

    def step():
        inputs = quantizer.idxBl_to_var_input(idx_list)
        with cast:
            logits = model(labels, inputs)
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


if __name__ == "__main__":
    main()
