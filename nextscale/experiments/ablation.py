"""The paper's Table 3 at CPU scale: from a next-token (raster) baseline to VAR, one design choice at a time.

Rows (each adds one thing to the row above, as the paper's):

    AR             GPT-2-style next-token model on a one-scale tokenizer; plain sampling
    AR → VAR       next-scale prediction, without AdaLN (class in the start token) or attention normalisation
    + AdaLN        class conditioning by AdaLN in every block
    + top-k        sampling from the k most likely tokens
    + CFG          classifier-free guidance
    + attn. norm.  L2-normalised attention with a learned temperature
    + scale up     a larger model

The AR → VAR comparison is matched: the same depth, width and heads, the same attention temperature (GPT-2's
1/√(head dim) for every row without attention normalisation), the same optimiser, schedule, batch and number of
training images, and tokenizers trained for the same number of steps. Rows that differ only in sampling share one
trained model. Every model trains `train_seeds` times (the scale-up model `large_train_seeds` times) and every
trained model is sampled with every one of `sample_seeds`; the table reports mean ± sd over all of them.

Models are trained and scored one at a time (every model's first training seed, then every model's second), and
each one's records land in ablation.json before the next trains, so the ablation can be spread over several machines:
`recorded` names an ablation.json made elsewhere (docs/data/ablation.json) whose scored models are not trained again.
`large_model` names a model directory that stands in for the scale-up model's first training seed instead of training
it (the shipped `fmnist` is the last weights of exactly that run); it must have the scale-up model's configuration.
Costs are timed on the models built from their configurations with initial weights (sampling's arithmetic does not
depend on the weights), so they need no trained run on the machine that times them.

Along training, the checkpoints of the curve models are kept and scored (FID of `samples_per_class` × classes
samples, test loss on the whole test split) at `curve_points` evenly spaced steps. Inference cost is measured at the
end with the rows interleaved: latency of one image (batch 1) and throughput at batch `timing_batch`, best of
`timing_repeats` rounds.

    out/
      runs/<model>/seed<k>/     ordinary training runs (resumable; checkpoints kept for the curves)
      samples/                  every sample set (.npz with labels), by row, training seed and sampling seed
      ablation.json             every record (rows, curves, tokenizers, costs): what docs/data/ablation.json holds
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.utils.flop_counter import FlopCounterMode

from nextscale.data.build import DataConfig
from nextscale.errors import UsageError
from nextscale.eval.metrics import evaluate_transformer
from nextscale.eval.sample_set import class_balanced_npz
from nextscale.experiments.ablation_config import CURVE_ROWS, MODELS, AblationConfig, model_overrides
from nextscale.experiments.ablation_report import MODEL_FACTS, QUALITY_KEYS
from nextscale.experiments.jobs import TrainingJob, transformer_job
from nextscale.model.config import var_preset
from nextscale.model.cost import parameters, training_flops
from nextscale.model.raster import RasterTransformer, raster_preset
from nextscale.model.var import VAR
from nextscale.pipeline import Pipeline
from nextscale.pretrained import load_tokenizer
from nextscale.sampling import SamplingSettings
from nextscale.timing import time_interleaved
from nextscale.token_space import TokenSpace
from nextscale.tokenizer.tokenizer import Tokenizer
from nextscale.train.var_task import next_token_loss, teacher_forced_loss

logger = logging.getLogger(__name__)


CACHE_FOLDERS = {"var": "token_cache", "raster": "token_cache_1scale"}  # one per tokenizer, shared by its runs


def run_directory(config: AblationConfig, key: str, seed: int) -> Path:
    return Path(config.output_dir) / "runs" / key / f"seed{seed}"


def training_job(config: AblationConfig, key: str, seed: int, progress: bool = True) -> TrainingJob:
    """The run that trains model `key` with training seed `seed`: an ordinary training run, its checkpoints kept at
    the curve points."""
    spec = MODELS[key]
    return transformer_job(
        output_dir=run_directory(config, key, seed),
        tokenizer=config.raster_tokenizer if spec.architecture == "raster" else config.tokenizer,
        architecture=spec.architecture,
        preset=getattr(config, spec.preset_field),
        model=model_overrides(config, key),
        data=config.data,
        token_cache_dir=Path(config.output_dir) / CACHE_FOLDERS[spec.architecture],
        steps=config.steps,
        batch_size=config.batch_size,
        base_lr=config.base_lr,
        final_lr_ratio=config.final_lr_ratio,
        ema_decay=config.ema_decay,
        precision=config.large_precision if spec.large else config.precision,
        seed=seed,
        log_every=25,
        eval_every=0,
        eval_batches=10,
        save_every=config.curve_steps[0],
        keep_last=config.curve_points + 1,  # every curve point stays until the run is scored
        progress=progress,
    )


def train_model(config: AblationConfig, key: str, seed: int, progress: bool = True) -> None:
    """Train (or resume, or skip when exported) model `key` with training seed `seed`."""
    if config.stands_in(key, seed):
        return
    job = training_job(config, key, seed, progress)
    if not job.exported:
        logger.info("ablation: training %s seed %d (%d steps)", key, seed, job.loop.steps)
        job.run()


def model_config(config: AblationConfig, key: str, num_classes: int):
    """The built VARConfig / RasterConfig of model `key` (preset, overrides, the data's classes)."""
    spec = MODELS[key]
    preset = raster_preset if spec.architecture == "raster" else var_preset
    return preset(getattr(config, spec.preset_field), **model_overrides(config, key), num_classes=num_classes)


def token_spaces(config: AblationConfig):
    """{architecture: token space}: the multi-scale tokenizer's, and its finest grid alone for the raster model."""
    space = load_tokenizer(Path(config.tokenizer) / "tokenizer").token_space
    return {"var": space, "raster": TokenSpace(space.vocab_size, space.latent_channels, (space.patch_nums[-1],))}


def plan(config: AblationConfig, probe: bool = True) -> list[dict]:
    """Every training run of the ablation (model, seed) with its parameters, training images and PFLOPs
    (`nextscale.model.cost`), and with `probe` the minutes its training takes here (one timed optimizer step on
    random tokens, after a warm-up) and the number of images the evaluation samples from it. Needs only the
    multi-scale tokenizer."""
    tokenizer = load_tokenizer(Path(config.tokenizer) / "tokenizer")
    spaces = token_spaces(config)
    num_classes = config.data.build("train").num_classes
    rows_per_model = {key: sum(row.model == key for row in config.selected_rows) for key in config.model_keys()}
    curve_models = {row.model for row in config.selected_rows if row.name in CURVE_ROWS}
    plans = []
    for key in config.model_keys():
        architecture = MODELS[key].architecture
        built = model_config(config, key, num_classes)
        space = spaces[architecture]
        per_image = training_flops(built, space)
        seconds = None
        if probe:
            model = (RasterTransformer if architecture == "raster" else VAR)(built, space)
            seconds = _time_a_training_step(model, tokenizer, config.batch_size)
        samples = len(config.sample_seeds) * rows_per_model[key] + (config.curve_points if key in curve_models else 0)
        for seed in config.seeds(key):
            stand_in = config.stands_in(key, seed)
            plans.append({
                "model": key, "seed": seed, "parameters": parameters(built, space), "stand_in": stand_in,
                "steps": config.steps, "images": config.steps * config.batch_size,
                "pflops": config.steps * config.batch_size * per_image / 1e15,
                "train_minutes": None if seconds is None else 0.0 if stand_in else seconds * config.steps / 60,
                "evaluation_samples": samples * config.samples_per_class * num_classes,
            })  # fmt: skip
    return plans


def _time_a_training_step(model, tokenizer, batch_size: int) -> float:
    """Seconds of one optimizer step (forward, backward, AdamW) of `model` on random tokens, best of two."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    sides = model.token_space.patch_nums
    maps = [torch.randint(model.token_space.vocab_size, (batch_size, s, s), generator=generator) for s in sides]
    labels = torch.randint(model.config.num_classes, (batch_size,), generator=generator)

    def step() -> float:
        start = time.perf_counter()
        if isinstance(model, RasterTransformer):
            loss, _ = next_token_loss(model, maps, labels)
        else:
            loss, _ = teacher_forced_loss(model, tokenizer, maps, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step()
    return min(step() for _ in range(2))


# ---- sampling and scoring --------------------------------------------------------------------------------------------


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_").replace("__", "_")


def load_pipeline(config: AblationConfig, key: str, seed: int, step: int | None = None):
    """The exported model of a run, or (with `step`) its checkpoint at that step: the EMA weights where the run kept
    them, as the export does."""
    if config.stands_in(key, seed):
        if step is not None:
            raise UsageError(f"{config.large_model} stands in for {key} seed {seed}: it has no checkpoints")
        pipe = Pipeline.from_pretrained(config.large_model)
        if pipe.model.config != model_config(config, key, pipe.num_classes):
            raise UsageError(f"--large-model {config.large_model} is not a {config.large_preset} model as {key} is")
        return pipe
    directory = run_directory(config, key, seed)
    pipe = Pipeline.from_pretrained(directory / "model")
    if step is not None:
        checkpoint = directory / "checkpoints" / f"step_{step:08d}"
        ema = checkpoint / "ema.safetensors"
        if ema.is_file():
            pipe.model.load_state_dict(load_file(ema), strict=False)  # parameters only; buffers come from the export
        else:
            pipe.model.load_state_dict(load_file(checkpoint / "model.safetensors"))
        pipe.model.eval()
    return pipe


def score_samples(config: AblationConfig, samples: Path, progress: bool = True) -> dict:
    from nextscale.eval.evaluate_samples import EvaluationConfig, evaluate_samples  # torch-fidelity: optional

    quality = evaluate_samples(EvaluationConfig(samples=str(samples), reference=config.reference), progress)
    return {k: quality[k] for k in QUALITY_KEYS}


def teacher_forced_test_loss(config: AblationConfig, pipe, progress: bool = True) -> float:
    """Teacher-forced loss of the model over the whole test split (mean over tokens)."""
    test = DataConfig(**{**asdict(config.data), "hflip": False}).build("test")
    return evaluate_transformer(pipe.model, pipe.tokenizer, test, progress=progress)["L_mean"]


def model_facts(config: AblationConfig, key: str, num_classes: int) -> dict:
    """Shape, parameters, training images and training FLOPs (`nextscale.model.cost`) of a model."""
    spec = MODELS[key]
    built = model_config(config, key, num_classes)
    space = token_spaces(config)[spec.architecture]
    per_image = training_flops(built, space)
    images = config.steps * config.batch_size
    return {
        "architecture": spec.architecture,
        "preset": getattr(config, spec.preset_field),
        "overrides": model_overrides(config, key),
        "depth": built.depth,
        "width": built.width,
        "heads": built.num_heads,
        "parameters": parameters(built, space),
        "train_images": images,
        "training_flops_per_image": per_image,
        "train_pflops": images * per_image / 1e15,
    }


def sampling_flops_per_image(pipe, settings: SamplingSettings) -> int:
    """FLOPs of sampling one image, transformer and decoder together (FlopCounterMode over a batch of two)."""
    counter = FlopCounterMode(display=False)
    with counter:
        pipe.generate([0, 1], seed=0, settings=settings)
    return counter.get_total_flops() // 2


# ---- inference cost --------------------------------------------------------------------------------------------------


def untrained_pipeline(config: AblationConfig, key: str, num_classes: int) -> Pipeline:
    """Model `key` and its tokenizer built from their configurations with seeded initial weights: the arithmetic of
    sampling does not depend on the weights, so the costs are measured on these (on any machine, trained or not)."""
    torch.manual_seed(0)
    tokenizer = load_tokenizer(Path(config.tokenizer) / "tokenizer")
    built = model_config(config, key, num_classes)
    if MODELS[key].architecture == "raster":
        one_scale = replace(tokenizer.config, patch_nums=(tokenizer.config.patch_nums[-1],), num_phis=1)
        tokenizer = Tokenizer(one_scale)
        return Pipeline(tokenizer=tokenizer, model=RasterTransformer(built, token_spaces(config)["raster"]))
    return Pipeline(tokenizer=tokenizer, model=VAR(built, tokenizer.token_space))


def measure_costs(config: AblationConfig, num_classes: int) -> dict[str, dict]:
    """Every row's latency, throughput and sampling FLOPs per image, the rows interleaved (`untrained_pipeline`)."""
    pipes = {key: untrained_pipeline(config, key, num_classes) for key in config.model_keys()}
    samplers = {}
    for row in config.selected_rows:
        pipe, settings = pipes[row.model], config.settings(row)
        labels = [i % pipe.num_classes for i in range(config.timing_batch)]
        samplers[row.name] = lambda n, pipe=pipe, settings=settings, labels=labels: pipe.generate(
            labels[:n], seed=0, settings=settings
        )
    with torch.inference_mode():
        timings = time_interleaved(samplers, config.timing_batch, config.timing_repeats)
    timings.pop("_order")
    for row in config.selected_rows:
        timings[row.name]["sampling_flops_per_image"] = sampling_flops_per_image(pipes[row.model], config.settings(row))
    return timings


# ---- the whole ablation ----------------------------------------------------------------------------------------------


# the settings that change what a record measures: records made with other values are not mixed with these
RESULT_SETTINGS = ("base_preset", "large_preset", "images", "batch_size", "base_lr", "final_lr_ratio", "ema_decay",
                   "top_k", "cfg", "samples_per_class", "curve_points", "reference", "data")  # fmt: skip
RECORD_KEYS = {"records": ("row", "train_seed", "sample_seed"), "curves": ("row", "train_seed", "step")}


class Results:
    """ablation.json: written after every finished piece, so an interrupted ablation resumes where it stopped."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}
        for name in ("records", "curves"):
            self.data.setdefault(name, [])
        self.data.setdefault("models", {})
        self.data.setdefault("costs", {})
        self.data.setdefault("tokenizers", {})

    def find(self, table: str, **key) -> dict | None:
        return next((r for r in self.data[table] if all(r.get(k) == v for k, v in key.items())), None)

    def adopt(self, recorded: Path, config: AblationConfig) -> None:
        """Take the records, curve points, model facts and tokenizer floors of another ablation.json (made on
        another machine, say) that this one lacks; refuse one made with other settings."""
        other = json.loads(recorded.read_text())
        mine = asdict(config)
        differ = [k for k in RESULT_SETTINGS if k in other.get("config", {}) and other["config"][k] != mine[k]]
        if differ:
            raise UsageError(f"recorded {recorded}: made with other settings ({', '.join(differ)}); not mixed")
        for table, keys in RECORD_KEYS.items():
            for record in other.get(table, []):
                if not self.find(table, **{k: record[k] for k in keys}):
                    self.data[table].append(record)
        for table in ("models", "tokenizers"):
            self.data[table] = {**other.get(table, {}), **self.data[table]}
        self.save()

    def add(self, table: str, record: dict) -> None:
        self.data[table].append(record)
        self.save()

    def save(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        partial.replace(self.path)


def model_rows(config: AblationConfig, key: str) -> list:
    return [row for row in config.selected_rows if row.model == key]


def scored(config: AblationConfig, results: Results, key: str, seed: int) -> bool:
    """Whether every record and curve point of model `key`, training seed `seed`, is in the results."""
    rows = model_rows(config, key)
    records = all(results.find("records", row=row.name, train_seed=seed, sample_seed=sample_seed)
                  for row in rows for sample_seed in config.sample_seeds)  # fmt: skip
    curves = all(results.find("curves", row=row.name, train_seed=seed, step=step)
                 for row in rows if row.name in CURVE_ROWS for step in config.curve_steps)  # fmt: skip
    return records and curves


def row_records(config: AblationConfig, results: Results, key: str, train_seed: int, progress: bool = True) -> None:
    """One record per (row, sampling seed) of model `key`, training seed `train_seed`: sample quality and the
    model's test loss."""
    out = Path(config.output_dir)
    for row in model_rows(config, key):
        pipe, loss = None, None
        for sample_seed in config.sample_seeds:
            if results.find("records", row=row.name, train_seed=train_seed, sample_seed=sample_seed):
                continue
            pipe = pipe or load_pipeline(config, row.model, train_seed)
            loss = loss if loss is not None else teacher_forced_test_loss(config, pipe, progress)
            path = out / "samples" / f"{_slug(row.name)}-train{train_seed}-sample{sample_seed}.npz"
            class_balanced_npz(pipe, config.settings(row), config.samples_per_class, config.sample_batch_size,
                               sample_seed, path, progress, f"{row.name} seed {train_seed}/{sample_seed}")  # fmt: skip
            record = {"row": row.name, "model": row.model, "train_seed": train_seed, "sample_seed": sample_seed,
                      **score_samples(config, path, progress), "test_loss": loss}  # fmt: skip
            results.add("records", record)


def curve_records(config: AblationConfig, results: Results, key: str, train_seed: int, progress: bool = True) -> None:
    """FID (sampling seed 0) and test loss of model `key`, training seed `train_seed`, at every curve step, where
    one of its rows is a curve row."""
    out = Path(config.output_dir)
    for row in model_rows(config, key):
        if row.name not in CURVE_ROWS:
            continue
        per_image = results.data["models"][row.model]["training_flops_per_image"]
        for step in config.curve_steps:
            if results.find("curves", row=row.name, train_seed=train_seed, step=step):
                continue
            pipe = load_pipeline(config, row.model, train_seed, step)
            path = out / "samples" / "curves" / f"{_slug(row.name)}-train{train_seed}-step{step}.npz"
            class_balanced_npz(pipe, config.settings(row), config.samples_per_class, config.sample_batch_size, 0,
                               path, progress, f"{row.name} seed {train_seed} step {step}")  # fmt: skip
            quality = score_samples(config, path, progress)
            images = step * config.batch_size
            loss = teacher_forced_test_loss(config, pipe, progress)
            results.add("curves", {"row": row.name, "model": row.model, "train_seed": train_seed, "step": step,
                                   "train_images": images, "train_pflops": images * per_image / 1e15,
                                   **quality, "test_loss": loss})  # fmt: skip


def tokenizer_floor(config: AblationConfig, tokenizer: str, progress: bool = True) -> dict:
    """The test split round-tripped through a tokenizer, scored like samples: no model on it can do better."""
    from nextscale.eval.evaluate_samples import EvaluationConfig, evaluate_samples  # torch-fidelity: optional

    evaluation = EvaluationConfig(samples=config.reference, reference=config.reference, reconstruct_with=tokenizer)
    quality = evaluate_samples(evaluation, progress)
    return {"tokenizer": tokenizer, "psnr": quality["reconstruction_psnr"], **{k: quality[k] for k in QUALITY_KEYS}}


def run_ablation(config: AblationConfig, progress: bool = True) -> dict:
    """Train and score every model in turn (its records and curve points land in <out>/ablation.json before the next
    model trains), then time the rows; returns the data. Models `recorded` elsewhere are not trained again."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out / "ablation.json")
    if config.recorded:
        results.adopt(Path(config.recorded), config)
    results.data["config"] = asdict(config)
    num_classes = config.data.build("train").num_classes
    _record_floor(config, results, "multi-scale", config.tokenizer, progress)
    for key, seed in config.training_order():
        if scored(config, results, key, seed):
            logger.info("ablation: %s seed %d is scored already", key, seed)
            continue
        if MODELS[key].architecture == "raster":
            _record_floor(config, results, "one-scale", config.raster_tokenizer, progress)
        train_model(config, key, seed, progress)
        results.data["models"].setdefault(key, model_facts(config, key, num_classes))
        row_records(config, results, key, seed, progress)
        curve_records(config, results, key, seed, progress)
    if not results.data["costs"]:
        results.data["costs"] = measure_costs(config, num_classes)
        results.save()
    for record in results.data["records"]:  # each record carries its model's facts and its row's cost
        facts, cost = results.data["models"][record["model"]], results.data["costs"][record["row"]]
        record.update({k: facts[k] for k in MODEL_FACTS})
        record.update({k: cost[k] for k in ("latency_ms_batch1", "images_per_s_batch100")})
    results.save()
    return results.data


def _record_floor(config: AblationConfig, results: Results, name: str, tokenizer: str, progress: bool) -> None:
    floors = results.data["tokenizers"]
    if name not in floors and config.reference.startswith("fashion-mnist"):
        floors[name] = tokenizer_floor(config, tokenizer, progress)
        results.save()
