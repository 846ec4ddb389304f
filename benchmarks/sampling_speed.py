"""Next-scale (VAR) against next-token (raster) generation and training at equal model size, side by side.

    python benchmarks/sampling_speed.py                                     # the fmnist-small presets, batch 64
    python benchmarks/sampling_speed.py --preset fmnist-tiny --batch-size 16 --repeats 5

Both models are this library's, with random weights (speed does not depend on them) and matched parameter counts:
VAR on the 32-px Fashion-MNIST tokenizer's token space (6 scales, 130 tokens), the raster baseline on a one-scale
tokenizer at the same finest grid (8×8 = 64 tokens, generated one by one). Sampling includes classifier-free
guidance (2B rows), top-k/top-p and the tokenizer's decode, as a user runs it; training is one optimizer step
(teacher-forced loss, backward, AdamW) on random tokens. Interleaved repeats; min and median are printed.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from nextscale import VAR, Tokenizer, TokenSpace, generate, tokenizer_preset, var_preset
from nextscale.model.raster import RasterTransformer, raster_preset
from nextscale.raster_sampling import generate_raster
from nextscale.timing import interleaved_times
from nextscale.train.var_task import next_token_loss, teacher_forced_loss


def training_step(model, tokenizer, token_maps, labels, loss_fn):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)

    def step():
        loss, _ = loss_fn(model, token_maps, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="fmnist-small", help="VAR and raster preset of the same size")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device, B = args.device, args.batch_size

    torch.manual_seed(0)
    var_tokenizer = Tokenizer(tokenizer_preset("fmnist-32")).to(device).eval()
    raster_tokenizer = Tokenizer(tokenizer_preset("fmnist-32", patch_nums=(8,), num_phis=1)).to(device).eval()
    var = VAR(var_preset(args.preset), var_tokenizer.token_space).to(device).eval()
    raster = RasterTransformer(raster_preset(args.preset), raster_tokenizer.token_space).to(device).eval()
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    space: TokenSpace = var.token_space
    print(f"{args.preset}: VAR {count(var):.2f}M parameters, {space.schedule.total_length} tokens in "
          f"{space.schedule.num_scales} scales | raster {count(raster):.2f}M parameters, "
          f"{raster.sequence_length} tokens | batch {B}, {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip

    labels = [i % 10 for i in range(B)]
    sampling = interleaved_times(
        {
            "VAR (next-scale)": lambda: generate(var, var_tokenizer, labels, "fid", seed=0),
            "raster (next-token)": lambda: generate_raster(raster, raster_tokenizer, labels, "fid", seed=0),
        },
        args.repeats,
    )
    labels_B = torch.tensor(labels, device=device)
    images = torch.rand(B, 3, 32, 32, device=device) * 2 - 1
    with torch.no_grad():
        var_maps, raster_maps = var_tokenizer.encode(images), raster_tokenizer.encode(images)
    var.train(), raster.train()
    training = interleaved_times(
        {
            "VAR (next-scale)": training_step(
                var, var_tokenizer, var_maps, labels_B, lambda m, t, y: teacher_forced_loss(m, var_tokenizer, t, y)
            ),
            "raster (next-token)": training_step(raster, raster_tokenizer, raster_maps, labels_B, next_token_loss),
        },
        args.repeats,
    )
    print(f"{'':28s} {'min s':>8s} {'median s':>9s} {'images/s':>9s}")
    for title, times in (("sampling (with decode)", sampling), ("training step", training)):
        print(title)
        for name, values in times.items():
            print(f"  {name:26s} {min(values):8.3f} {statistics.median(values):9.3f} {B / min(values):9.1f}")
    speedup = min(sampling["raster (next-token)"]) / min(sampling["VAR (next-scale)"])
    print(f"VAR samples {speedup:.1f}x faster than the next-token baseline of the same size")


if __name__ == "__main__":
    main()
