"""A scaling sweep: transformers of several depths trained on the same data, tokenizer, schedule and token budget,
evaluated at regular compute points, then fitted with the paper's power laws.

    sweep_dir/
      d2-seed0/ d3-seed0/ …  ordinary training runs (`nextscale train` layout: checkpoints/, metrics.jsonl, model/)
      token_cache/           the data set's tokens, encoded once for all runs
      runs.json              per run: depth, seed, width, heads, N, token budget, and every evaluation point
      fits.json              each metric against N and C_min: α, β, Pearson r, the points, residuals, α's interval
      loss_vs_parameters.png, loss_vs_compute.png    the paper's Fig. 5 and Fig. 6

Every run is resumable, so rerunning the sweep continues where it stopped and skips finished runs; with `recorded`
(a runs.json kept elsewhere, e.g. docs/data/scaling/runs.json) the runs it holds count as finished too, so a sweep
spread over several machines trains each run once and the report fits them all. Sizes follow
the paper's rule (width 64·depth, one 64-wide head per 64 channels) unless `width_per_depth` says otherwise; every
size trains once per seed. Each run trains `evaluations × spacing` steps, spacing = round(images / batch /
evaluations), and is evaluated after every `spacing` steps, so the points are evenly spread and the last is the final
step (e.g. 24,000 images at batch 64 with 6 evaluations: 372 steps, evaluated at 62, 124, …, 372). Each evaluation
reads exactly `eval_images` images of the data's validation split (Fashion-MNIST: the test images): L_last = loss of
the last scale, L_avg = mean over all tokens, Err = 1 − top-1 accuracy.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from nextscale.errors import UsageError
from nextscale.experiments.jobs import transformer_job
from nextscale.experiments.scaling_config import SweepConfig
from nextscale.model.config import VARConfig, var_preset
from nextscale.model.cost import parameter_count, training_flops_per_image
from nextscale.model.var import VAR, cross_entropy_per_token
from nextscale.scaling.analysis import RunCurve, curves_from_runs, write_fits_json
from nextscale.token_space import TokenSpace

logger = logging.getLogger(__name__)

METRICS_FROM_LOG = {  # the sweep's metric → how it follows from an evaluation record
    "L_last": lambda r: r["eval/L_tail"],
    "L_avg": lambda r: r["eval/L_mean"],
    "Err_last": lambda r: 1 - r["eval/acc_tail"] / 100,
    "Err_avg": lambda r: 1 - r["eval/acc_mean"] / 100,
}


@dataclass
class RunPlan:
    depth: int
    seed: int
    width: int
    heads: int
    parameters: int  # N
    steps: int
    images: int
    tokens: int  # images × tokens per image
    pflops: float  # training compute of the whole run
    seconds_per_step: float | None = None  # measured, when planned with a timing probe

    @property
    def estimated_hours(self) -> float | None:
        """Training time from the probe's step time (evaluations and the token cache come on top)."""
        return None if self.seconds_per_step is None else self.seconds_per_step * self.steps / 3600


def plan(config: SweepConfig, token_space: TokenSpace, num_classes: int, probe: bool = False) -> list[RunPlan]:
    """N, tokens and FLOPs of every run; with `probe`, the measured seconds of a training step (for the estimate)."""
    plans = []
    seconds = {}  # the probe's step time per depth (seeds share it)
    for depth, seed in config_runs(config):
        model_config = _model_config(config, depth, num_classes)
        per_image = training_flops_per_image(model_config, token_space)
        steps = config.steps
        if probe and depth not in seconds:
            seconds[depth] = _time_a_step(model_config, token_space, config)
        plans.append(
            RunPlan(
                depth=depth,
                seed=seed,
                width=model_config.width,
                heads=model_config.num_heads,
                parameters=parameter_count(model_config, token_space),
                steps=steps,
                images=steps * config.batch_size,
                tokens=steps * config.batch_size * token_space.schedule.total_length,
                pflops=steps * config.batch_size * per_image / 1e15,
                seconds_per_step=seconds.get(depth) if probe else None,
            )
        )
    return plans


def _model_config(config: SweepConfig, depth: int, num_classes: int) -> VARConfig:
    return var_preset("fmnist-small", **config.model_overrides(depth), num_classes=num_classes)


def _time_a_step(model_config: VARConfig, token_space: TokenSpace, config: SweepConfig) -> float:
    """Seconds of one optimizer step (forward, backward, AdamW) on random tokens, best of three after a warm-up."""
    torch.manual_seed(0)
    model = VAR(model_config, token_space).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    B, schedule = config.batch_size, token_space.schedule
    labels = torch.randint(model_config.num_classes, (B,))
    inputs = torch.randn(B, schedule.total_length - schedule.first_length, token_space.latent_channels)
    targets = torch.randint(token_space.vocab_size, (B, schedule.total_length))
    cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.precision == "bf16")

    def step() -> float:
        start = time.perf_counter()
        with cast:
            logits = model(labels, inputs, drop_labels=False)
        cross_entropy_per_token(logits, targets).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step()
    return min(step() for _ in range(3))


def config_runs(config: SweepConfig) -> list[tuple[int, int]]:
    """(depth, seed) of every run, smallest first."""
    return [(depth, seed) for depth in config.depths for seed in config.seeds]


def run_name(depth: int, seed: int) -> str:
    return f"d{depth}-seed{seed}"


def run_directory(config: SweepConfig, depth: int, seed: int) -> Path:
    return Path(config.output_dir) / run_name(depth, seed)


def training_job(config: SweepConfig, depth: int, seed: int, progress: bool = True):
    """The run of size `depth` and seed `seed`: an ordinary training run, evaluated every `spacing` steps."""
    return transformer_job(
        output_dir=run_directory(config, depth, seed),
        tokenizer=config.tokenizer,
        preset="fmnist-small",
        model=config.model_overrides(depth),
        data=config.data,
        token_cache_dir=Path(config.output_dir) / "token_cache",
        steps=config.steps,
        batch_size=config.batch_size,
        base_lr=config.base_lr,
        precision=config.precision,
        seed=seed,
        log_every=config.spacing,
        eval_every=config.spacing,
        eval_batches=config.eval_images // config.batch_size,
        save_every=config.spacing,
        progress=progress,
    )


def train_runs(config: SweepConfig, progress: bool = True) -> None:
    """Train (or resume, or skip when finished) every run of the sweep, smallest first."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(asdict(config), indent=2, default=str) + "\n")
    recorded = {run["name"] for run in config.recorded_runs()}
    for depth, seed in config_runs(config):
        job = training_job(config, depth, seed, progress)
        if run_name(depth, seed) in recorded and not _finished(job.directory, config.steps):
            logger.info("%s: recorded in %s, not trained again", run_name(depth, seed), config.recorded)
            continue
        if _finished(job.directory, config.steps):
            logger.info("%s: finished earlier (%s)", run_name(depth, seed), job.directory)
            continue
        logger.info("%s: training %d steps in %s", run_name(depth, seed), config.steps, job.directory)
        job.run()


def _finished(directory: Path, steps: int) -> bool:
    """A run is finished when its export exists and its log has the final evaluation."""
    return (directory / "model").is_dir() and any(r.get("step") == steps for r in _eval_records(directory))


def _eval_records(directory: Path) -> list[dict]:
    log = directory / "metrics.jsonl"
    if not log.is_file():
        return []
    records = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "eval/L_tail" in record:
            records.append(record)
    return records


def collect(config: SweepConfig, token_space: TokenSpace, num_classes: int) -> list[RunCurve]:
    """Each finished run's evaluation curve: cumulative training FLOPs (steps × batch × FLOPs per image) and the
    four metrics at every evaluation point."""
    curves = []
    for depth, seed in config_runs(config):
        records = {r["step"]: r for r in _eval_records(run_directory(config, depth, seed))}  # the last per step wins
        if not records:
            continue
        model_config = _model_config(config, depth, num_classes)
        per_image = training_flops_per_image(model_config, token_space)
        steps = sorted(records)
        curves.append(
            RunCurve(
                name=run_name(depth, seed),
                parameters=parameter_count(model_config, token_space),
                flops=[s * config.batch_size * per_image for s in steps],
                metrics={m: [value(records[s]) for s in steps] for m, value in METRICS_FROM_LOG.items()},
            )
        )
    return curves


def run_records(config: SweepConfig, token_space: TokenSpace, num_classes: int) -> list[dict]:
    """runs.json: per finished run its depth, seed, shape, N, token budget and every evaluation point (step, tokens,
    training PFLOPs so far, L_last, L_avg, Err_last, Err_avg)."""
    plans = {(p.depth, p.seed): p for p in plan(config, token_space, num_classes)}
    tokens_per_image = token_space.schedule.total_length
    runs = []
    for depth, seed in config_runs(config):
        records = {r["step"]: r for r in _eval_records(run_directory(config, depth, seed))}
        if not records:
            continue
        p = plans[(depth, seed)]
        per_image = p.pflops / p.images
        points = [{"step": step, "tokens": step * config.batch_size * tokens_per_image,
                   "pflops": step * config.batch_size * per_image,
                   **{metric: value(records[step]) for metric, value in METRICS_FROM_LOG.items()}}
                  for step in sorted(records)]  # fmt: skip
        runs.append({"name": run_name(depth, seed), "depth": depth, "seed": seed, "width": p.width, "heads": p.heads,
                     "parameters": p.parameters, "steps": p.steps, "images": p.images, "token_budget": p.tokens,
                     "points": points})  # fmt: skip
    return runs


def report(config: SweepConfig, token_space: TokenSpace, num_classes: int) -> dict:
    """Write runs.json, fits.json and the two figures from the finished runs; returns the fits."""
    from nextscale.scaling.plots import plot_against_compute, plot_against_parameters  # matplotlib: optional

    out = Path(config.output_dir)
    runs = run_records(config, token_space, num_classes)
    trained_here = {run["name"] for run in runs}
    runs += [run for run in config.recorded_runs() if run["name"] not in trained_here]
    runs.sort(key=lambda run: (run["depth"], run["seed"]))
    if len(runs) < 2:
        raise UsageError(f"{out}: fits need at least two finished runs, found {len(runs)}")
    (out / "runs.json").write_text(json.dumps(runs, indent=1) + "\n")
    curves = curves_from_runs(runs)
    fits_path = write_fits_json(curves, out / "fits.json")
    plot_against_parameters(curves, out / "loss_vs_parameters.png")
    plot_against_compute(curves, out / "loss_vs_compute.png")
    return json.loads(fits_path.read_text())
