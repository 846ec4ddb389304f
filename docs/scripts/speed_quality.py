"""The speed–quality frontier of the training-free accelerations on a model (docs/performance.md, issue 20).

    python docs/scripts/speed_quality.py quality [--model fmnist] [--seeds 0,1,2] [--only OPTION]   # scored samples
    python docs/scripts/speed_quality.py speed [--repeats 5]     # interleaved timings: run it on an idle machine
    python docs/scripts/speed_quality.py report [--check] [--record-fast nextscale/assets/fmnist]   # table, figure

The options, their summary against the exact path and the fast choice are `nextscale.experiments.speed_quality`;
the table and the figure `nextscale.experiments.speed_quality_report`. `quality` draws a class-balanced set of 2,000
samples per option and sampling seed and scores it against the 10,000 test images (FID, IS, precision, recall, class
accuracy with the shipped classifier's features); `speed` times every option against the exact path in interleaved
rounds (latency of one image at batch 1, images/s at batch 100, decode included; best round of `--repeats`) and the
decoder alone; both write into docs/data/speed_quality.json, which `report` turns into the table between the
`<!-- speed:frontier -->` markers of docs/performance.md and docs/speed_quality.png (FID against images/s).
With `--record-fast DIR`, `report` also writes the fastest option within +10 % FID of the exact path into the model
directory's nextscale.json as its "fast" recipe, which `--fast` and `Pipeline.from_pretrained(fast=True)` apply.
Sample sets are kept under --work, so a rerun only computes what is missing.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import asdict, replace
from pathlib import Path

from nextscale.experiments.speed_quality import OPTIONS, QUALITY_KEYS, Option, fast_recipe, summarized
from nextscale.experiments.speed_quality_report import plot, table

DOCS = Path(__file__).resolve().parents[1]
DATA = DOCS / "data" / "speed_quality.json"
DOCUMENT = DOCS / "performance.md"
FIGURE = DOCS / "speed_quality.png"


def active_options(args) -> tuple[Option, ...]:
    """The options this run can measure: those with a refiner only when --refiner names one; with --only (quality),
    only those named."""
    options = tuple(option for option in OPTIONS if args.refiner or not option.refiner)
    if args.phase != "quality" or not args.only:
        return options
    if unknown_options(args.only):
        raise SystemExit(unknown_options(args.only))
    return tuple(option for option in options if option.name in args.only)


def unknown_options(names: list[str]) -> str | None:
    """The --only error for names that are no option's, or None."""
    unknown = sorted(set(names) - {option.name for option in OPTIONS})
    return f"--only: no option named {', '.join(unknown)}" if unknown else None


def refiner_label(refiner: str | None) -> str | None:
    """How the data names a refiner: its folder's name and parameter count (paths differ between machines)."""
    if refiner is None:
        return None
    from nextscale.pretrained import load_refiner

    transformer = load_refiner(refiner)
    return f"{Path(refiner).name} ({sum(p.numel() for p in transformer.parameters()) / 1e6:.2f}M parameters)"


def load_pipeline(model: str, option: Option, refiner: str | None = None):
    from nextscale.inference import prepare_for_inference, prepare_transformer
    from nextscale.pipeline import Pipeline
    from nextscale.pretrained import load_refiner

    second = load_refiner(refiner) if option.refiner else None
    pipe = Pipeline.from_pretrained(model, refiner=second)
    pipe.settings = replace(pipe.settings, **option.settings)
    if option.prepare:
        prepare_for_inference(pipe.tokenizer, pipe.model, **option.prepare)
        if second is not None:
            prepare_transformer(
                second, quantize=option.prepare.get("quantize"), compile=bool(option.prepare.get("compile"))
            )
    return pipe


def read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"options": {}}


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=1) + "\n")
    partial.replace(path)


def entry(data: dict, option: Option, refiner: str | None = None) -> dict:
    record = data["options"].setdefault(option.name, {})
    record.update(settings=option.settings, prepare=option.prepare)
    if option.refiner and record.setdefault("refiner", refiner) != refiner:  # one refiner per option's seeds, timings
        raise SystemExit(f"{option.name}: recorded with the refiner {record['refiner']}, not {refiner}")
    record.setdefault("quality", [])
    return record


def measure_quality(args, data: dict) -> None:
    from nextscale.eval.evaluate_samples import EvaluationConfig, evaluate_samples
    from nextscale.eval.sample_set import class_balanced_npz

    for seed in args.seeds:  # every option's first seed before any option's second: a cut run stays balanced
        for option in active_options(args):
            record = entry(data, option, args.refiner_label)
            if any(q["sample_seed"] == seed for q in record["quality"]):
                continue
            pipe = load_pipeline(args.model, option, args.refiner)
            path = args.work / f"{option.name.replace(' ', '_').replace('%', 'pc')}-seed{seed}.npz"
            class_balanced_npz(pipe, pipe.settings, 200, 100, seed, path, description=f"{option.name} seed {seed}")
            scores = evaluate_samples(EvaluationConfig(samples=str(path), reference="fashion-mnist:test"), False)
            record["quality"].append({"sample_seed": seed, **{k: scores[k] for k in QUALITY_KEYS}})
            record["sampling"] = asdict(pipe.settings)
            write(args.data, data)
            print(f"{option.name} seed {seed}: FID {scores['fid']:.3f}", flush=True)


def measure_speed(args, data: dict) -> None:
    import torch

    from nextscale.timing import interleaved_times, time_interleaved

    options = active_options(args)
    pipes = {option.name: load_pipeline(args.model, option, args.refiner) for option in options}
    labels = [i % 10 for i in range(args.batch)]
    samplers = {name: (lambda n, pipe=pipe: pipe.generate(labels[:n], seed=0)) for name, pipe in pipes.items()}
    with torch.inference_mode():
        timings = time_interleaved(samplers, args.batch, args.repeats, latency_images=args.latency_images)
        timings.pop("_order")
        exact = pipes["exact"]
        side = exact.model.schedule.final_side
        f_hat = torch.randn(args.batch, exact.tokenizer.token_space.latent_channels, side, side)
        nhwc = pipes["NHWC decoder"].tokenizer
        decoders = {"NCHW": lambda: exact.tokenizer.decode_fhat(f_hat), "NHWC": lambda: nhwc.decode_fhat(f_hat)}
        decode_seconds = {layout: min(t) for layout, t in interleaved_times(decoders, args.repeats).items()}
        data["draw_seconds"] = {"batch1": time_draws(exact, 1, args.repeats),
                                "batch100": time_draws(exact, args.batch, args.repeats)}  # fmt: skip
    for option in options:
        entry(data, option, args.refiner_label)["speed"] = timings[option.name]
    data["decoder_seconds_batch100"] = decode_seconds["NCHW"]
    data["decoder_nhwc_seconds_batch100"] = decode_seconds["NHWC"]
    data["machine"] = {"processor": platform.processor() or platform.machine(), "cpu": _cpu_name(),
                       "threads": torch.get_num_threads(), "torch": torch.__version__}  # fmt: skip
    write(args.data, data)
    for option in options:
        t = timings[option.name]
        print(f"{option.name:32s} {t['images_per_s_batch100']:7.1f} images/s  {t['latency_ms_batch1']:7.1f} ms")


def time_draws(pipe, batch: int, repeats: int) -> dict[str, float]:
    """Seconds of the token draws alone for one batch (every scale, the pipeline's top-k / top-p, logits of the model's
    vocabulary drawn at random once): the official multinomial against the inverse-CDF draw, interleaved, best
    round."""
    import torch

    from nextscale.sampling import sample_inverse_cdf, sample_top_k_top_p
    from nextscale.timing import interleaved_times

    settings, vocabulary = pipe.settings, pipe.tokenizer.token_space.vocab_size
    generator = torch.Generator().manual_seed(0)
    logits = [
        torch.randn(batch, side * side, vocabulary, generator=generator) * 3 for side in pipe.model.schedule.patch_nums
    ]

    def draw(sampler):
        return lambda: [sampler(x.clone(), settings.top_k, settings.top_p, generator) for x in logits]

    draws = {"multinomial": draw(sample_top_k_top_p), "inverse_cdf": draw(sample_inverse_cdf)}
    return {name: min(times) for name, times in interleaved_times(draws, repeats).items()}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


# ---- the report ---------------------------------------------------------------------------------------------------


def report(args, data: dict) -> int:
    from nextscale.marked_sections import replace_marked_sections

    document = args.document.read_text()
    rendered = replace_marked_sections(document, "speed", {"frontier": table(data)})
    meta_file = Path(args.record_fast) / "nextscale.json" if args.record_fast else None
    meta = json.loads(meta_file.read_text()) if meta_file else {}
    recipe = fast_recipe(data)
    if args.check:
        stale = [str(args.document)] if rendered != document else []
        if meta_file is not None and meta.get("fast") != recipe:
            stale.append(f'{meta_file} (its "fast" record)')
        for path in stale:
            print(f"{path} is not what {args.data} gives: run {Path(__file__).name} report", file=sys.stderr)
        return 1 if stale else 0
    args.document.write_text(rendered)
    if meta_file is not None and recipe is not None:
        meta_file.write_text(json.dumps({**meta, "fast": recipe}, indent=2) + "\n")
    if any(r["speed"] for r in summarized(data)):
        plot(data, args.figure)
    print(f"{args.document} rewritten from {args.data}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phase", choices=("quality", "speed", "report"))
    parser.add_argument("--model", default="fmnist", help="a model name or directory (default: the shipped fmnist)")
    parser.add_argument("--seeds", default="0,1,2", help="sampling seeds of the quality sets")
    parser.add_argument("--only", action="append", metavar="OPTION",
                        help="quality: only this option (repeatable: more seeds where a budget is close)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timing rounds (the best is kept)")
    parser.add_argument("--batch", type=int, default=100, help="throughput batch")
    parser.add_argument("--latency-images", type=int, default=10, help="batch-1 calls averaged per round")
    parser.add_argument("--work", type=Path, default=Path("runs/speed_quality"), help="sample sets (kept)")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--document", type=Path, default=DOCUMENT)
    parser.add_argument("--figure", type=Path, default=FIGURE)
    parser.add_argument("--check", action="store_true", help="report: exit 1 when the document differs")
    parser.add_argument("--refiner", help="quality/speed: a model directory on the same tokenizer for the "
                        "collaborative-decoding options (left out: those options are skipped)")  # fmt: skip
    parser.add_argument(
        "--record-fast", help="report: write the fast recipe into this model directory's nextscale.json"
    )
    args = parser.parse_args(argv)
    if args.only and unknown_options(args.only):
        parser.exit(2, unknown_options(args.only) + "\n")  # one line, exit 2, as argparse's own mistakes
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.refiner_label = refiner_label(args.refiner) if args.phase != "report" else None
    data = read(args.data)
    if args.phase == "quality":
        measure_quality(args, data)
    elif args.phase == "speed":
        measure_speed(args, data)
    return report(args, read(args.data)) if args.phase == "report" else 0


if __name__ == "__main__":
    sys.exit(main())
