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
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from nextscale.data.build import DataConfig
from nextscale.sampling import SamplingSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    name: str
    model: str  # the trained model it samples from (a key of MODELS)
    top_k: bool
    cfg: bool


@dataclass(frozen=True)
class ModelSpec:
    architecture: str  # var | raster
    preset_field: str  # the AblationConfig field naming the preset
    overrides: dict  # VARConfig / RasterConfig overrides
    large: bool = False  # the scale-up model: its own seeds and precision


GPT2_ATTENTION = "gpt2"  # marker replaced by 1/√(head dim) when the overrides are resolved

MODELS: dict[str, ModelSpec] = {
    # the AR baseline gets VAR fmnist-tiny's depth, width and heads (its preset is deeper: see RasterConfig)
    "ar": ModelSpec(
        "raster", "base_preset", {"depth": 4, "width": 128, "num_heads": 2, "attention_scale": GPT2_ATTENTION}
    ),
    "var-plain": ModelSpec(
        "var", "base_preset", {"adaln": False, "l2_norm_attention": False, "attention_scale": GPT2_ATTENTION}
    ),
    "var-adaln": ModelSpec(
        "var", "base_preset", {"adaln": True, "l2_norm_attention": False, "attention_scale": GPT2_ATTENTION}
    ),
    "var-full": ModelSpec("var", "base_preset", {"adaln": True, "l2_norm_attention": True}),
    "var-large": ModelSpec("var", "large_preset", {"adaln": True, "l2_norm_attention": True}, large=True),
}
ROWS = (
    Row("AR", "ar", top_k=False, cfg=False),
    Row("AR → VAR", "var-plain", top_k=False, cfg=False),
    Row("+ AdaLN", "var-adaln", top_k=False, cfg=False),
    Row("+ top-k", "var-adaln", top_k=True, cfg=False),
    Row("+ CFG", "var-adaln", top_k=True, cfg=True),
    Row("+ attn. norm.", "var-full", top_k=True, cfg=True),
    Row("+ scale up", "var-large", top_k=True, cfg=True),
)
CURVE_ROWS = ("AR", "AR → VAR", "+ attn. norm.")  # the rows whose models are scored along training
PAPER = {  # the paper's Table 3 (ImageNet 256): FID, and the inference cost relative to AR where quoted here
    "AR": (18.65, 1.0),
    "AR → VAR": (5.22, 0.013),
    "+ AdaLN": (4.95, None),
    "+ top-k": (4.64, None),
    "+ CFG": (3.60, None),
    "+ attn. norm.": (3.30, None),
    "+ scale up": (1.73, None),  # VAR-d30
}


@dataclass
class AblationConfig:
    """The models, the shared training budget, the seeds and the evaluation of the ablation."""

    output_dir: str = "runs/ablation"
    tokenizer: str = "runs/fmnist/tokenizer/model"  # the multi-scale tokenizer of the VAR rows
    raster_tokenizer: str = "runs/fmnist/tokenizer-1scale/model"  # one-scale tokenizer at the finest grid (AR)
    base_preset: str = "fmnist-tiny"  # size of the base rows (AR gets the same depth, width and heads)
    large_preset: str = "fmnist-small"  # VAR size of the "scale up" row
    images: int = 120_000  # training images of every model (2 epochs of Fashion-MNIST)
    batch_size: int = 64
    base_lr: float = 4e-3  # per 256 images
    final_lr_ratio: float = 0.1
    ema_decay: float = 0.998  # EMA of the weights, exported and scored (0: the raw weights)
    precision: str = "fp32"  # of the base rows: fp32 | bf16 (bf16 only where the hardware has it)
    large_precision: str = "auto"  # of the scale-up model (auto: bf16 where the hardware multiplies in it)
    train_seeds: tuple[int, ...] = (0, 1)  # every base model trains once per seed
    large_train_seeds: tuple[int, ...] = (0,)  # the scale-up model (the costliest run)
    sample_seeds: tuple[int, ...] = (0, 1, 2)  # every trained model is sampled once per seed
    curve_points: int = 5  # checkpoints scored along training (evenly spaced in steps; the last is the end)
    top_k: int = 112  # the official 900 of 4096 codes, scaled to a 512-code vocabulary
    cfg: float = 1.5  # the official FID setting's guidance
    samples_per_class: int = 200  # samples of each class per (model, sampling seed) for FID / IS / accuracy
    sample_batch_size: int = 100
    timing_batch: int = 100  # throughput batch of the cost measurement (latency is at batch 1)
    timing_repeats: int = 3  # interleaved rounds; the best of them is kept
    reference: str = "fashion-mnist:test"  # the real images FID is measured against (or a folder / an .npz)
    rows: tuple[str, ...] = tuple(row.name for row in ROWS)  # which rows to run (AR is needed: costs are relative)
    data: DataConfig = field(default_factory=lambda: DataConfig(name="fashion-mnist", image_size=32))

    def __post_init__(self) -> None:
        if self.images < self.batch_size or self.samples_per_class < 1 or self.timing_batch < 1:
            raise ValueError("images must be at least one batch, samples_per_class and timing_batch positive")
        if self.curve_points < 1 or self.timing_repeats < 1:
            raise ValueError("curve_points and timing_repeats must be positive")
        for name in ("rows", "train_seeds", "large_train_seeds", "sample_seeds"):
            setattr(self, name, tuple(getattr(self, name)))
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        known = [row.name for row in ROWS]
        unknown = [name for name in self.rows if name not in known]
        if unknown or "AR" not in self.rows:
            raise ValueError(f"rows must include AR and come from {known}; got {list(self.rows)}")

    @property
    def selected_rows(self) -> tuple[Row, ...]:
        return tuple(row for row in ROWS if row.name in self.rows)

    @property
    def steps(self) -> int:
        return max(self.images // self.batch_size, 1)

    @property
    def curve_steps(self) -> list[int]:
        """The steps scored along training: `curve_points` evenly spaced, the last one the final step."""
        return sorted({max(round(self.steps * (i + 1) / self.curve_points), 1) for i in range(self.curve_points)})

    def settings(self, row: Row) -> SamplingSettings:
        return SamplingSettings(cfg=self.cfg if row.cfg else 0.0, top_k=self.top_k if row.top_k else 0, top_p=0.0)

    def seeds(self, key: str) -> tuple[int, ...]:
        return self.large_train_seeds if MODELS[key].large else self.train_seeds

    def model_keys(self) -> list[str]:
        needed = {row.model for row in self.selected_rows}
        return [key for key in MODELS if key in needed]


# ---- the training jobs -----------------------------------------------------------------------------------------------


def model_overrides(config: AblationConfig, key: str) -> dict:
    """The model's preset overrides with the GPT-2 attention temperature resolved to 1/√(head dim)."""
    from nextscale.model.config import var_preset
    from nextscale.model.raster import raster_preset

    spec = MODELS[key]
    overrides = {k: v for k, v in spec.overrides.items() if v != GPT2_ATTENTION}
    if spec.overrides.get("attention_scale") == GPT2_ATTENTION:
        preset = raster_preset if spec.architecture == "raster" else var_preset
        built = preset(getattr(config, spec.preset_field), **overrides)
        overrides["attention_scale"] = 1.0 / math.sqrt(built.width // built.num_heads)
    return overrides


CACHE_FOLDERS = {"var": "token_cache", "raster": "token_cache_1scale"}  # one per tokenizer, shared by its runs


def run_directory(config: AblationConfig, key: str, seed: int) -> Path:
    return Path(config.output_dir) / "runs" / key / f"seed{seed}"


def training_job(config: AblationConfig, key: str, seed: int, progress: bool = True):
    """The (VARTask, LoopConfig) that trains model `key` with training seed `seed`: one ordinary training run."""
    from nextscale.train.loop import LoopConfig
    from nextscale.train.var_task import VARTask, VARTrainConfig

    spec = MODELS[key]
    task = VARTask(
        VARTrainConfig(
            tokenizer=config.raster_tokenizer if spec.architecture == "raster" else config.tokenizer,
            architecture=spec.architecture,
            preset=getattr(config, spec.preset_field),
            model=model_overrides(config, key),
            token_cache_dir=str(
                Path(config.output_dir) / ("token_cache_1scale" if spec.architecture == "raster" else "token_cache")
            ),
            data=config.data,
        )
    )
    spacing = config.curve_steps[0]
    loop = LoopConfig(
        output_dir=str(run_directory(config, key, seed)),
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
        save_every=spacing,
        keep_last=config.curve_points + 1,  # every curve point stays until the run is scored
        progress=progress,
    )
    return task, loop


def train_models(config: AblationConfig, progress: bool = True) -> None:
    """Train (or resume, or skip when exported) every model of the selected rows, every training seed."""
    from nextscale.train.loop import run

    for key in config.model_keys():
        for seed in config.seeds(key):
            if (run_directory(config, key, seed) / "model").is_dir():
                continue
            task, loop = training_job(config, key, seed, progress)
            logger.info("ablation: training %s seed %d (%d steps)", key, seed, loop.steps)
            run(task, loop)


def plan(config: AblationConfig, probe: bool = True) -> list[dict]:
    """Every training run of the ablation (model, seed) with its parameters, training images and PFLOPs, and with
    `probe` the minutes its training takes here (one timed optimizer step on random tokens, after a warm-up) and the
    number of images the evaluation samples from it. Needs only the multi-scale tokenizer."""
    from nextscale.model.config import var_preset
    from nextscale.model.raster import RasterTransformer, raster_preset
    from nextscale.model.var import VAR
    from nextscale.pretrained import load_tokenizer
    from nextscale.token_space import TokenSpace

    tokenizer = load_tokenizer(Path(config.tokenizer) / "tokenizer")
    space = tokenizer.token_space
    one_scale = TokenSpace(space.vocab_size, space.latent_channels, (space.patch_nums[-1],))
    num_classes = config.data.build("train").num_classes
    rows_per_model = {key: sum(row.model == key for row in config.selected_rows) for key in config.model_keys()}
    curve_models = {row.model for row in config.selected_rows if row.name in CURVE_ROWS}
    plans = []
    for key in config.model_keys():
        spec = MODELS[key]
        overrides = {**model_overrides(config, key), "num_classes": num_classes}
        preset = getattr(config, spec.preset_field)
        if spec.architecture == "raster":
            model = RasterTransformer(raster_preset(preset, **overrides), one_scale)
        else:
            model = VAR(var_preset(preset, **overrides), space)
        per_image = measured_training_flops_per_image(model, tokenizer)
        seconds = _time_a_training_step(model, tokenizer, config.batch_size) if probe else None
        samples = len(config.sample_seeds) * rows_per_model[key] + (config.curve_points if key in curve_models else 0)
        for seed in config.seeds(key):
            plans.append({
                "model": key, "seed": seed, "parameters": sum(p.numel() for p in model.parameters()),
                "steps": config.steps, "images": config.steps * config.batch_size,
                "pflops": config.steps * config.batch_size * per_image / 1e15,
                "train_minutes": None if seconds is None else seconds * config.steps / 60,
                "evaluation_samples": samples * config.samples_per_class * num_classes,
            })  # fmt: skip
    return plans


def _time_a_training_step(model, tokenizer, batch_size: int) -> float:
    """Seconds of one optimizer step (forward, backward, AdamW) of `model` on random tokens, best of two."""
    from nextscale.model.raster import RasterTransformer
    from nextscale.train.var_task import next_token_loss, teacher_forced_loss

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
    from safetensors.torch import load_file

    from nextscale.pipeline import Pipeline

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


def sample_to_npz(pipe, settings: SamplingSettings, per_class: int, batch_size: int, seed: int, path: Path,
                  progress: bool = True, description: str = "sampling") -> Path:  # fmt: skip
    """`per_class` samples of every class (class-major) into an .npz with their labels; kept if already there."""
    from nextscale.progress import progress_bar

    if path.is_file():
        return path
    labels = [c for c in range(pipe.num_classes) for _ in range(per_class)]
    chunks = []
    bar = progress_bar(total=len(labels), description=description, unit="img", enabled=progress)
    for batch, begin in enumerate(range(0, len(labels), batch_size)):
        batch_labels = labels[begin : begin + batch_size]
        images = pipe.generate(batch_labels, seed=seed * 1_000_003 + batch, settings=settings)
        chunks.append(images.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
        bar.update(len(batch_labels))
    bar.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npz")
    np.savez(partial, arr_0=np.concatenate(chunks), labels=np.array(labels, dtype=np.int64))
    partial.replace(path)
    return path


MODEL_FACTS = ("parameters", "train_images", "train_pflops")
QUALITY_KEYS = ("fid", "inception_score", "precision", "recall", "class_accuracy")


def score_samples(config: AblationConfig, samples: Path, progress: bool = True) -> dict:
    from nextscale.eval.evaluate_samples import EvaluationConfig, evaluate_samples

    quality = evaluate_samples(EvaluationConfig(samples=str(samples), reference=config.reference), progress)
    return {k: quality[k] for k in QUALITY_KEYS}


def test_loss(config: AblationConfig, pipe, progress: bool = True) -> float:
    """Teacher-forced loss of the model over the whole test split (mean over tokens)."""
    from nextscale.eval.metrics import evaluate_transformer

    test = DataConfig(**{**asdict(config.data), "hflip": False}).build("test")
    return evaluate_transformer(pipe.model, pipe.tokenizer, test, progress=progress)["L_mean"]


def model_facts(config: AblationConfig, key: str) -> dict:
    """Parameters, training images and training FLOPs (counted by torch over one image) of a model."""
    pipe = load_pipeline(config, key, config.seeds(key)[0])
    per_image = measured_training_flops_per_image(pipe.model, pipe.tokenizer)
    images = config.steps * config.batch_size
    spec = MODELS[key]
    return {
        "architecture": spec.architecture,
        "preset": getattr(config, spec.preset_field),
        "overrides": model_overrides(config, key),
        "depth": pipe.model.config.depth,
        "width": pipe.model.config.width,
        "heads": pipe.model.config.num_heads,
        "parameters": sum(p.numel() for p in pipe.model.parameters()),
        "train_images": images,
        "training_flops_per_image": per_image,
        "train_pflops": images * per_image / 1e15,
    }


def measured_training_flops_per_image(model, tokenizer) -> int:
    """Forward + backward FLOPs of one training image, counted by torch (FlopCounterMode, math attention); for VAR it
    equals nextscale.scaling.flops.training_flops_per_image, and it counts the raster baseline the same way."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from nextscale.model.raster import RasterTransformer
    from nextscale.train.var_task import next_token_loss, teacher_forced_loss

    model = model.train()
    final = tokenizer.config.image_size
    with torch.no_grad():
        maps = tokenizer.encode(torch.zeros(1, tokenizer.config.image_channels, final, final))
    labels = torch.zeros(1, dtype=torch.int64)
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        if isinstance(model, RasterTransformer):
            loss, _ = next_token_loss(model, maps, labels)
        else:
            loss, _ = teacher_forced_loss(model, tokenizer, maps, labels)
        loss.backward()
    model.zero_grad(set_to_none=True)
    model.eval()
    return counter.get_total_flops()


def sampling_flops_per_image(pipe, settings: SamplingSettings) -> int:
    """FLOPs of sampling one image, transformer and decoder together (FlopCounterMode over a batch of two)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        pipe.generate([0, 1], seed=0, settings=settings)
    return counter.get_total_flops() // 2


# ---- inference cost --------------------------------------------------------------------------------------------------


def time_interleaved(samplers: dict, batch: int, repeats: int, latency_images: int = 3) -> dict[str, dict]:
    """Latency at batch 1 (ms per image, mean over `latency_images` calls) and throughput at `batch` (images/s) of
    every sampler, measured in `repeats` rounds that visit the samplers in turn (so slow drifts of the machine hit all
    of them alike), after one warm-up call each; the best round is kept. A sampler is `f(batch_size) -> None`."""
    for sample in samplers.values():
        sample(1)
        sample(min(batch, 10))
    best: dict[str, dict] = {name: {"latency_ms_batch1": math.inf, "images_per_s_batch100": 0.0} for name in samplers}
    order = []
    for _ in range(repeats):
        for name, sample in samplers.items():
            order.append(name)
            start = time.perf_counter()
            for _ in range(latency_images):
                sample(1)
            latency = (time.perf_counter() - start) / latency_images * 1000
            start = time.perf_counter()
            sample(batch)
            throughput = batch / (time.perf_counter() - start)
            best[name]["latency_ms_batch1"] = min(best[name]["latency_ms_batch1"], latency)
            best[name]["images_per_s_batch100"] = max(best[name]["images_per_s_batch100"], throughput)
    for name in best:
        best[name]["rounds"] = repeats
    best["_order"] = order  # type: ignore[assignment]
    return best


def measure_costs(config: AblationConfig) -> dict[str, dict]:
    """Every row's latency, throughput and sampling FLOPs per image, the rows interleaved (training seed 0 models)."""
    pipes = {key: load_pipeline(config, key, config.seeds(key)[0]) for key in config.model_keys()}
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


class Results:
    """ablation.json: written after every finished piece, so an interrupted ablation resumes where it stopped."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}
        for name in ("records", "curves"):
            self.data.setdefault(name, [])
        self.data.setdefault("models", {})
        self.data.setdefault("costs", {})

    def find(self, table: str, **key) -> dict | None:
        return next((r for r in self.data[table] if all(r.get(k) == v for k, v in key.items())), None)

    def add(self, table: str, record: dict) -> None:
        self.data[table].append(record)
        self.save()

    def save(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        partial.replace(self.path)


def row_records(config: AblationConfig, results: Results, progress: bool = True) -> None:
    """One record per (row, training seed, sampling seed): sample quality and the model's test loss."""
    out = Path(config.output_dir)
    for row in config.selected_rows:
        for train_seed in config.seeds(row.model):
            pipe, loss = None, None
            for sample_seed in config.sample_seeds:
                if results.find("records", row=row.name, train_seed=train_seed, sample_seed=sample_seed):
                    continue
                pipe = pipe or load_pipeline(config, row.model, train_seed)
                loss = loss if loss is not None else test_loss(config, pipe, progress)
                path = out / "samples" / f"{_slug(row.name)}-train{train_seed}-sample{sample_seed}.npz"
                sample_to_npz(pipe, config.settings(row), config.samples_per_class, config.sample_batch_size,
                              sample_seed, path, progress, f"{row.name} seed {train_seed}/{sample_seed}")  # fmt: skip
                record = {"row": row.name, "model": row.model, "train_seed": train_seed, "sample_seed": sample_seed,
                          **score_samples(config, path, progress), "test_loss": loss}  # fmt: skip
                results.add("records", record)


def curve_records(config: AblationConfig, results: Results, progress: bool = True) -> None:
    """FID (sampling seed 0) and test loss of the curve rows' models at every curve step of every training seed."""
    out = Path(config.output_dir)
    rows = [row for row in config.selected_rows if row.name in CURVE_ROWS]
    for row in rows:
        per_image = results.data["models"][row.model]["training_flops_per_image"]
        for train_seed in config.seeds(row.model):
            for step in config.curve_steps:
                if results.find("curves", row=row.name, train_seed=train_seed, step=step):
                    continue
                pipe = load_pipeline(config, row.model, train_seed, step)
                path = out / "samples" / "curves" / f"{_slug(row.name)}-train{train_seed}-step{step}.npz"
                sample_to_npz(pipe, config.settings(row), config.samples_per_class, config.sample_batch_size, 0,
                              path, progress, f"{row.name} seed {train_seed} step {step}")  # fmt: skip
                quality = score_samples(config, path, progress)
                images = step * config.batch_size
                results.add("curves", {"row": row.name, "model": row.model, "train_seed": train_seed, "step": step,
                                       "train_images": images, "train_pflops": images * per_image / 1e15,
                                       **quality, "test_loss": test_loss(config, pipe, progress)})  # fmt: skip


def tokenizer_floor(config: AblationConfig, tokenizer: str, progress: bool = True) -> dict:
    """The test split round-tripped through a tokenizer, scored like samples: no model on it can do better."""
    from nextscale.eval.evaluate_samples import EvaluationConfig, evaluate_samples

    evaluation = EvaluationConfig(samples=config.reference, reference=config.reference, reconstruct_with=tokenizer)
    quality = evaluate_samples(evaluation, progress)
    return {"tokenizer": tokenizer, "psnr": quality["reconstruction_psnr"], **{k: quality[k] for k in QUALITY_KEYS}}


def run_ablation(config: AblationConfig, progress: bool = True) -> dict:
    """Train every model, then score every row, the curves and the costs into <out>/ablation.json; returns its data."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_models(config, progress)
    results = Results(out / "ablation.json")
    results.data["config"] = asdict(config)
    floors = results.data.setdefault("tokenizers", {})
    needs_raster = any(MODELS[key].architecture == "raster" for key in config.model_keys())
    for name, path in (
        ("multi-scale", config.tokenizer),
        ("one-scale", config.raster_tokenizer if needs_raster else None),
    ):
        if path is not None and name not in floors and config.reference.startswith("fashion-mnist"):
            floors[name] = tokenizer_floor(config, path, progress)
            results.save()
    for key in config.model_keys():
        if key not in results.data["models"]:
            results.data["models"][key] = model_facts(config, key)
            results.save()
    row_records(config, results, progress)
    curve_records(config, results, progress)
    if not results.data["costs"]:
        results.data["costs"] = measure_costs(config)
        results.save()
    for record in results.data["records"]:  # each record carries its model's facts and its row's cost
        facts, cost = results.data["models"][record["model"]], results.data["costs"][record["row"]]
        record.update({k: facts[k] for k in MODEL_FACTS})
        record.update({k: cost[k] for k in ("latency_ms_batch1", "images_per_s_batch100")})
    results.save()
    return results.data


# ---- the report: tables from ablation.json ---------------------------------------------------------------------------


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    array = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if array.size == 0:
        return math.nan, math.nan
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def summarize(data: dict) -> list[dict]:
    """Per row: mean and sd of every quality figure over all (training seed, sampling seed) records, the model's
    facts, and the step from the row above: 'gain' or 'loss' when the FID moves by more than the larger of the two
    rows' spreads, else 'within noise'."""
    rows = []
    for row in ROWS:
        records = [r for r in data["records"] if r["row"] == row.name]
        if not records:
            continue
        summary = {"row": row.name, "model": row.model, "records": len(records),
                   "train_seeds": sorted({r["train_seed"] for r in records}),
                   "sample_seeds": sorted({r["sample_seed"] for r in records}),
                   **{k: data["models"].get(row.model, {}).get(k) for k in MODEL_FACTS},
                   "paper_fid": PAPER[row.name][0]}  # fmt: skip
        for key in (*QUALITY_KEYS, "test_loss"):
            summary[key], summary[key + "_sd"] = mean_sd([r[key] for r in records])
        if rows:
            above = rows[-1]
            delta, spread = summary["fid"] - above["fid"], max(summary["fid_sd"], above["fid_sd"])
            summary["fid_step"] = delta
            summary["step_verdict"] = "within noise" if abs(delta) <= spread else ("gain" if delta < 0 else "loss")
        rows.append(summary)
    return rows


def _pm(mean: float, sd: float, digits: int, scale: float = 1.0, unit: str = "") -> str:
    return f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}{unit}"


def markdown_table(data: dict) -> str:
    """The quality table: mean ± sd over training and sampling seeds, with the step verdicts and the paper's FID."""
    lines = [
        "| row | parameters | train images | train PFLOPs | seeds (train × sample) | FID | step | IS | class acc. | "
        "precision | recall | test loss | paper FID |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    floors = data.get("tokenizers", {})
    for name, uses in (("one-scale", "AR"), ("multi-scale", "VAR")):
        if name in floors:
            f = floors[name]
            lines.append(
                f"| floor: {name} tokenizer ({uses} rows), test images reconstructed | — | — | — | — | "
                f"{f['fid']:.2f} | — | {f['inception_score']:.2f} | {100 * f['class_accuracy']:.1f} % | "
                f"{f['precision']:.3f} | {f['recall']:.3f} | PSNR {f['psnr']:.2f} dB | — |"
            )
    for r in summarize(data):
        step = "—" if "fid_step" not in r else f"{r['fid_step']:+.2f} ({r['step_verdict']})"
        lines.append(
            f"| {r['row']} | {r['parameters'] / 1e6:.2f}M | {r['train_images']:,} | {r['train_pflops']:.3f} | "
            f"{len(r['train_seeds'])} × {len(r['sample_seeds'])} | {_pm(r['fid'], r['fid_sd'], 2)} | {step} | "
            f"{_pm(r['inception_score'], r['inception_score_sd'], 2)} | "
            f"{_pm(r['class_accuracy'], r['class_accuracy_sd'], 1, 100, ' %')} | "
            f"{_pm(r['precision'], r['precision_sd'], 3)} | {_pm(r['recall'], r['recall_sd'], 3)} | "
            f"{_pm(r['test_loss'], r['test_loss_sd'], 3)} | {r['paper_fid']} |"
        )
    return "\n".join(lines) + "\n"


def cost_table(data: dict) -> str:
    """Inference cost per row: FLOPs per image, latency at batch 1 and throughput at batch 100, relative to AR."""
    costs = data["costs"]
    if "AR" not in costs:
        return ""
    base = costs["AR"]
    lines = [
        "| row | sampling GFLOPs / image | latency, batch 1 (ms / image) | latency rel. to AR | images/s, batch 100 "
        "| time rel. to AR, batch 100 | paper rel. cost (latency) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        if row.name not in costs:
            continue
        c = costs[row.name]
        paper = PAPER[row.name][1]
        lines.append(
            f"| {row.name} | {c['sampling_flops_per_image'] / 1e9:.3f} | {c['latency_ms_batch1']:.1f} | "
            f"{c['latency_ms_batch1'] / base['latency_ms_batch1']:.3f} | {c['images_per_s_batch100']:.1f} | "
            f"{base['images_per_s_batch100'] / c['images_per_s_batch100']:.3f} | {'—' if paper is None else paper} |"
        )
    return "\n".join(lines) + "\n"


def curve_slopes(data: dict) -> dict[str, tuple[float, float]]:
    """Per curve row: (FID at the last point, its slope per doubling of training images over the last two points),
    averaged over training seeds."""
    slopes = {}
    for name in CURVE_ROWS:
        points = sorted((c for c in data["curves"] if c["row"] == name), key=lambda c: c["train_images"])
        images = sorted({c["train_images"] for c in points})
        if len(images) < 2:
            continue
        fid = {n: mean_sd([c["fid"] for c in points if c["train_images"] == n])[0] for n in images[-2:]}
        doublings = math.log2(images[-1] / images[-2])
        slopes[name] = (fid[images[-1]], (fid[images[-1]] - fid[images[-2]]) / doublings)
    return slopes


def plot_curves(data: dict, path: Path) -> Path:
    """FID against training images and against training PFLOPs, and test loss against images, for the curve rows:
    a thin line per training seed, a thick one for their mean."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 4))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 3)
    colours = dict(zip(CURVE_ROWS, ("tab:red", "tab:orange", "tab:blue")))
    for name in CURVE_ROWS:
        points = [c for c in data["curves"] if c["row"] == name]
        for x_key, y_key, ax in (("train_images", "fid", axes[0]), ("train_pflops", "fid", axes[1]),
                                 ("train_images", "test_loss", axes[2])):  # fmt: skip
            for seed in sorted({c["train_seed"] for c in points}):
                run = sorted((c for c in points if c["train_seed"] == seed), key=lambda c: c[x_key])
                ax.plot([c[x_key] for c in run], [c[y_key] for c in run], color=colours[name], alpha=0.35, lw=1)
            xs = sorted({c[x_key] for c in points})
            means = [mean_sd([c[y_key] for c in points if c[x_key] == x])[0] for x in xs]
            ax.plot(xs, means, color=colours[name], lw=2.2, marker="o", label=name)
    for ax, x_label, y_label in ((axes[0], "training images", "FID (2,000 samples)"),
                                 (axes[1], "training PFLOPs", "FID (2,000 samples)"),
                                 (axes[2], "training images", "test loss (nats / token)")):  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.grid(True, alpha=0.3)
    axes[0].legend()
    axes[2].set_title("test loss: 64 AR tokens vs 130 VAR tokens (not comparable across the two)", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path
