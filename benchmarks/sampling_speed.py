"""Sampling throughput: VAR's next-scale loop (fp32 and bf16) against a next-token baseline of the same size.

    python benchmarks/sampling_speed.py                                  # CPU-sized fmnist-small, batch 8
    python benchmarks/sampling_speed.py --preset var-d16 --tokenizer vqvae-f16-c160 --batch-size 4  # released sizes

Weights are random (speed does not depend on them). The baseline runs the same transformer blocks one token at a
time with a KV cache (raster-order autoregression over the same L tokens), i.e. what a GPT-style image generator of
equal size pays; both include classifier-free guidance (2B rows). Printed figures are measured side by side in one run.
"""

from __future__ import annotations

import argparse
import time

import torch

from nextscale import TOKENIZER_PRESETS, VAR, VAR_PRESETS, Tokenizer, generate, tokenizer_preset, var_preset


@torch.no_grad()
def next_token_baseline(model: VAR, batch_size: int, dtype: torch.dtype | None) -> None:
    """L single-token steps through the same blocks (KV cache, CFG rows), greedy: the transformer cost of
    generating the same number of tokens one by one. The tokenizer decode is the same for both and left out."""
    device = model.start_pos.device
    labels = torch.zeros(batch_size, dtype=torch.long, device=device)
    cond = model.class_embed(torch.cat((labels, torch.full_like(labels, model.num_classes))))
    cache = model.new_cache()
    x = model.start_tokens(cond)[:, :1]
    cast = torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type, enabled=False)
    for position in range(model.schedule.total_length):
        with cast:
            logits = model.step(x, cond, cache)
        token = logits[:batch_size, -1].argmax(-1)
        embedding = model.token_embed.weight.new_zeros(batch_size, 1, model.token_space.latent_channels)
        embedding[:, 0, 0] = token.float()  # stand-in input of the right shape; cost is what is measured
        x = model.token_embed(embedding) + model.pos_embed[:, position : position + 1]
        x = x.repeat(2, 1, 1)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fmnist-small", choices=sorted(VAR_PRESETS), help="transformer preset")
    parser.add_argument("--tokenizer", default="fmnist-32", choices=sorted(TOKENIZER_PRESETS), help="its tokenizer")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = Tokenizer(tokenizer_preset(args.tokenizer)).to(args.device).eval()
    model = VAR(var_preset(args.preset), tokenizer.token_space).to(args.device).eval()
    B = args.batch_size
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"{args.preset}: {params:.1f}M parameters, {model.schedule.total_length} tokens in "
          f"{model.schedule.num_scales} scales, {tokenizer.config.image_size} px, batch {B}, "
          f"{args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip

    rows = []
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        seconds = timed(
            lambda dtype=dtype: generate(model, tokenizer, 0, batch_size=B, cfg=1.5, top_k=900, top_p=0.96, seed=0,
                                         autocast_dtype=dtype),
            args.repeats,
        )  # fmt: skip
        rows.append((f"VAR next-scale ({name})", seconds))
        if not args.skip_baseline:
            seconds = timed(lambda dtype=dtype: next_token_baseline(model, B, dtype), max(1, args.repeats // 3))
            rows.append((f"next-token baseline ({name}, no decode)", seconds))
    print(f"{'method':42s} {'s/batch':>9s} {'images/s':>9s}")
    for name, seconds in rows:
        print(f"{name:42s} {seconds:9.3f} {B / seconds:9.2f}")
    var_bf16 = dict(rows)["VAR next-scale (bf16)"]
    var_fp32 = dict(rows)["VAR next-scale (fp32)"]
    print(f"bf16 / fp32 speed-up: {var_fp32 / var_bf16:.2f}x")
    if not args.skip_baseline:
        base = dict(rows)["next-token baseline (bf16, no decode)"]
        print(f"VAR (bf16, with decode) vs next-token baseline (bf16, without decode): {base / var_bf16:.1f}x faster")


if __name__ == "__main__":
    main()
