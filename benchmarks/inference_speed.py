"""CPU inference options of the shipped Fashion-MNIST model against plain fp32: int8 linears, compiled steps.

    python benchmarks/inference_speed.py                                   # batch 1 and 100, every variant
    python benchmarks/inference_speed.py --variants fp32 int8 --batch-sizes 1 --repeats 20 --threads 2

Variants (each a copy of the same weights, prepared by `nextscale.inference.prepare_for_inference`):
  fp32            the models as loaded
  int8            quantize="int8": the blocks' linears dynamically quantised
  compile         compile=True: torch.compile of each per-scale step (all blocks in one graph) and of the head
  compile-blocks  for comparison, the earlier scheme: torch.compile of each block's forward (set up here)
Two timings per variant and batch: the transformer alone (the sampler's per-scale calls on 2B rows, with the inputs
of one real sampling) and the whole `generate` (fid settings: guidance, top-k/top-p, decode). Variants run
interleaved, after a warm-up that includes compiling; min and median of the repeats are printed. The int8 row also
prints how far its teacher-forced logits are from fp32's on the same inputs.
"""

from __future__ import annotations

import argparse
import copy
import statistics
from functools import partial

import torch

from nextscale import Pipeline, generate
from nextscale.inference import prepare_for_inference
from nextscale.timing import interleaved_times

VARIANTS = ("fp32", "int8", "compile", "compile-blocks")


def prepared(pipe: Pipeline, variant: str):
    tokenizer, model = copy.deepcopy(pipe.tokenizer), copy.deepcopy(pipe.model)
    if variant == "int8":
        return prepare_for_inference(tokenizer, model, channels_last=False, quantize="int8")
    if variant == "compile":
        return prepare_for_inference(tokenizer, model, channels_last=False, compile=True)
    if variant == "compile-blocks":
        for block in model.blocks:
            block.forward = torch.compile(block.forward, dynamic=False)
    return tokenizer, model


@torch.no_grad()
def transformer_only(model, labels_B: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The transformer's share of sampling: every scale's step on 2B rows (conditional, unconditional)."""
    cond_BD = model.class_embed(torch.cat((labels_B, torch.full_like(labels_B, model.config.null_class))))
    cache = model.new_cache()
    x_BlC = model.start_tokens(cond_BD)
    for k in range(model.schedule.num_scales):
        logits = model.logits(model.step_hidden(x_BlC, cond_BD, cache), cond_BD)
        if k < len(inputs):
            x_BlC = model.scale_tokens(k + 1, inputs[k]).repeat(2, 1, 1)
    return logits


@torch.no_grad()
def logit_distance(pipe: Pipeline, model, labels_B: torch.Tensor, token_maps) -> str:
    teacher = pipe.tokenizer.teacher_input(token_maps)
    reference = pipe.model(labels_B, teacher, drop_labels=False)
    logits = model(labels_B, teacher, drop_labels=False)
    spread = reference.std()
    variation = 0.5 * (reference.softmax(-1) - logits.softmax(-1)).abs().sum(-1).mean()
    agree = (reference.argmax(-1) == logits.argmax(-1)).float().mean()
    difference = (logits - reference).abs() / spread
    return (
        f"teacher-forced logits vs fp32: max |Δ| {difference.max():.3f} σ, mean |Δ| {difference.mean():.4f} σ, "
        f"argmax agrees {agree:.1%}, total variation {variation:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fmnist", help="a model directory, or the shipped 'fmnist'")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = Pipeline.from_pretrained(args.model)
    models = {name: prepared(pipe, name) for name in ["fp32", *[v for v in args.variants if v != "fp32"]]}
    count = sum(p.numel() for p in pipe.model.parameters()) / 1e6
    print(f"{args.model}: {count:.1f}M parameters | torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"quantized engine {torch.backends.quantized.engine}")  # fmt: skip
    for B in args.batch_sizes:
        labels = [i % pipe.num_classes for i in range(B)]
        reference = generate(pipe.model, pipe.tokenizer, labels, "fid", seed=0, trace=True)
        inputs = [x.flatten(2).transpose(1, 2) for x in reference.trace["next_input"][:-1]]
        transformer = interleaved_times(
            {name: partial(transformer_only, m, reference.labels, inputs) for name, (_, m) in models.items()},
            args.repeats,
        )
        sampling = interleaved_times(
            {name: partial(generate, m, t, labels, "fid", seed=0) for name, (t, m) in models.items()},
            args.repeats,
        )
        print(f"batch {B}")
        print(f"  {'':22s} {'min ms':>9s} {'median ms':>10s} {'vs fp32':>8s}")
        for title, times in (("transformer", transformer), ("generate (with decode)", sampling)):
            print(f"  {title}")
            for name, values in times.items():
                speedup = min(times["fp32"]) / min(values)
                print(f"    {name:20s} {min(values) * 1e3:9.1f} {statistics.median(values) * 1e3:10.1f} "
                      f"{speedup:7.2f}x")  # fmt: skip
        if "int8" in models:
            print("  int8 " + logit_distance(pipe, models["int8"][1], reference.labels, reference.token_maps))


if __name__ == "__main__":
    main()
