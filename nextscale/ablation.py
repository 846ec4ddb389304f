"""The paper's Table 3 at CPU scale: from a next-token (raster) baseline to VAR, one design choice at a time.

Rows (each adds one thing to the row above, as the paper's):

    AR             GPT-2-style next-token model on a one-scale tokenizer; plain sampling
    AR → VAR       next-scale prediction, without AdaLN (class in the start token) or attention normalisation
    + AdaLN        class conditioning by AdaLN in every block
    + top-k        sampling from the k most likely tokens
    + CFG          classifier-free guidance
    + attn. norm.  L2-normalised attention with a learned temperature
    + scale up     a larger model

Rows that differ only in sampling share one trained model. Every model trains on the same data; the base-size rows
get the same training compute (the AR row's image count is set so its FLOPs equal the VAR rows'; the larger model
of the last row trains on the same images, so more compute, as in the paper). Each row is evaluated on samples (FID,
IS, precision/recall and class accuracy with the evaluation classifier, against the test images), teacher-forced
test loss, and sampling speed, measured for all rows in one process at the end, with the inference cost relative
to the AR row.

    out/
      runs/<model>/          ordinary training runs (resumable)
      samples/<row>.npz      the row's samples with their labels
      results.json, table.md, ablation_fid_vs_cost.png, ablation_samples.png
"""

from __future__ import annotations

import json
import logging
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


# model key → (architecture, preset attribute of AblationConfig, VARConfig / RasterConfig overrides)
MODELS: dict[str, tuple[str, str, dict]] = {
    "ar": ("raster", "raster_preset", {}),
    "var-plain": ("var", "base_preset", {"adaln": False, "l2_norm_attention": False}),
    "var-adaln": ("var", "base_preset", {"adaln": True, "l2_norm_attention": False}),
    "var-full": ("var", "base_preset", {"adaln": True, "l2_norm_attention": True}),
    "var-large": ("var", "large_preset", {"adaln": True, "l2_norm_attention": True}),
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
    """The models, the shared training budget and the evaluation of the ablation."""

    output_dir: str = "runs/ablation"
    tokenizer: str = "runs/fmnist/tokenizer/model"  # the multi-scale tokenizer of the VAR rows
    raster_tokenizer: str = "runs/fmnist/tokenizer-1scale/model"  # a one-scale tokenizer at the finest grid (AR)
    base_preset: str = "fmnist-tiny"  # VAR size of the base rows
    raster_preset: str = "fmnist-tiny"  # raster size of the AR row (the presets match VAR's parameter counts)
    large_preset: str = "fmnist-small"  # VAR size of the "scale up" row
    images: int = 115_200  # training images of each VAR row (the AR row: the same FLOPs)
    batch_size: int = 64
    base_lr: float = 4e-3  # per 256 images
    final_lr_ratio: float = 0.1
    precision: str = "fp32"  # fp32 | bf16 (bf16 only where the hardware has it)
    top_k: int = 112  # the official 900 of 4096 codes, scaled to a 512-code vocabulary
    cfg: float = 1.5  # the official FID setting's guidance
    samples_per_class: int = 500  # samples for FID / IS / class accuracy
    sample_batch_size: int = 100
    timing_images: int = 100  # images per row in the final speed measurement
    reference: str = "fashion-mnist:test"  # the real images FID is measured against (or a folder / an .npz)
    rows: tuple[str, ...] = tuple(row.name for row in ROWS)  # which rows to run (AR is needed: costs are relative)
    seed: int = 0
    data: DataConfig = field(default_factory=lambda: DataConfig(name="fashion-mnist", image_size=32))

    def __post_init__(self) -> None:
        if self.images < self.batch_size or self.samples_per_class < 1 or self.timing_images < 1:
            raise ValueError("images must be at least one batch, samples_per_class and timing_images positive")
        self.rows = tuple(self.rows)
        known = [row.name for row in ROWS]
        unknown = [name for name in self.rows if name not in known]
        if unknown or "AR" not in self.rows:
            raise ValueError(f"rows must include AR and come from {known}; got {list(self.rows)}")

    @property
    def selected_rows(self) -> tuple[Row, ...]:
        return tuple(row for row in ROWS if row.name in self.rows)

    def settings(self, row: Row) -> SamplingSettings:
        return SamplingSettings(cfg=self.cfg if row.cfg else 0.0, top_k=self.top_k if row.top_k else 0, top_p=0.0)


# ---- training -------------------------------------------------------------------------------------------------------


def model_directory(config: AblationConfig, key: str) -> Path:
    return Path(config.output_dir) / "runs" / key


def training_flops_per_image(architecture: str, preset: str, overrides: dict, tokenizer_dir: str) -> int:
    """Forward + backward FLOPs of one training image, counted by torch (FlopCounterMode, math attention)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from nextscale.pretrained import load_tokenizer
    from nextscale.train.var_task import ARCHITECTURES, next_token_loss, teacher_forced_loss

    tokenizer = load_tokenizer(Path(tokenizer_dir) / "tokenizer")
    preset_fn, module_class = ARCHITECTURES[architecture]
    model = module_class(preset_fn(preset, **overrides), tokenizer.token_space)
    final = tokenizer.config.image_size
    with torch.no_grad():
        maps = tokenizer.encode(torch.zeros(1, tokenizer.config.image_channels, final, final))
    labels = torch.zeros(1, dtype=torch.int64)
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        if architecture == "raster":
            loss, _ = next_token_loss(model, maps, labels)
        else:
            loss, _ = teacher_forced_loss(model, tokenizer, maps, labels)
        loss.backward()
    return counter.get_total_flops()


def train_models(config: AblationConfig, progress: bool = True) -> dict[str, dict]:
    """Train (or resume, or skip) every model; returns each one's images, steps and training PFLOPs."""
    from nextscale.train.loop import LoopConfig, run
    from nextscale.train.var_task import VARTask, VARTrainConfig

    out = Path(config.output_dir)
    var_flops = training_flops_per_image("var", config.base_preset, MODELS["var-plain"][2], config.tokenizer)
    budget = {}
    needed = {row.model for row in config.selected_rows}
    for key, (architecture, preset_field, overrides) in MODELS.items():
        if key not in needed:
            continue
        preset = getattr(config, preset_field)
        tokenizer = config.raster_tokenizer if architecture == "raster" else config.tokenizer
        per_image = training_flops_per_image(architecture, preset, overrides, tokenizer)
        images = config.images if architecture == "var" else round(config.images * var_flops / per_image)
        steps = max(images // config.batch_size, 1)
        budget[key] = {"images": steps * config.batch_size, "steps": steps, "preset": preset,
                       "pflops": steps * config.batch_size * per_image / 1e15}  # fmt: skip
        directory = model_directory(config, key)
        if (directory / "model").is_dir():
            continue
        logger.info("ablation: training %s (%s %s, %d steps)", key, architecture, preset, steps)
        task = VARTask(
            VARTrainConfig(
                tokenizer=tokenizer,
                architecture=architecture,
                preset=preset,
                model=overrides,
                token_cache_dir=str(out / "token_cache"),
                data=config.data,
            )
        )
        loop = LoopConfig(
            output_dir=str(directory),
            steps=steps,
            batch_size=config.batch_size,
            base_lr=config.base_lr,
            final_lr_ratio=config.final_lr_ratio,
            precision=config.precision,
            seed=config.seed,
            log_every=50,
            eval_every=0,
            eval_batches=10,
            save_every=max(steps // 10, 1),
            progress=progress,
        )
        run(task, loop)
    return budget


# ---- evaluation -----------------------------------------------------------------------------------------------------


def _pipeline(config: AblationConfig, key: str):
    from nextscale.pipeline import Pipeline

    return Pipeline.from_pretrained(model_directory(config, key) / "model")


def sample_row(config: AblationConfig, row: Row, progress: bool = True) -> Path:
    """The row's samples (samples_per_class of every class, class-major) in samples/<row>.npz with their labels."""
    from nextscale.progress import progress_bar

    path = Path(config.output_dir) / "samples" / f"{_slug(row.name)}.npz"
    if path.is_file():
        return path
    pipe = _pipeline(config, row.model)
    labels = [c for c in range(pipe.num_classes) for _ in range(config.samples_per_class)]
    chunks = []
    bar = progress_bar(total=len(labels), description=f"sampling {row.name}", unit="img", enabled=progress)
    for batch, begin in enumerate(range(0, len(labels), config.sample_batch_size)):
        batch_labels = labels[begin : begin + config.sample_batch_size]
        images = pipe.generate(batch_labels, seed=config.seed * 1_000_000 + batch, settings=config.settings(row))
        chunks.append(images.mul(255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
        bar.update(len(batch_labels))
    bar.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, arr_0=np.concatenate(chunks), labels=np.array(labels, dtype=np.int64))
    partial.replace(path)
    return path


def evaluate_row(config: AblationConfig, row: Row, samples: Path, progress: bool = True) -> dict:
    """FID, IS, precision/recall, class accuracy of the samples; teacher-forced test loss of the model."""
    from nextscale.eval.evaluate_samples import EvaluationConfig, evaluate_samples
    from nextscale.eval.metrics import evaluate_transformer

    quality = evaluate_samples(EvaluationConfig(samples=str(samples), reference=config.reference), progress)
    pipe = _pipeline(config, row.model)
    test = DataConfig(**{**asdict(config.data), "hflip": False}).build("test")
    loss = evaluate_transformer(pipe.model, pipe.tokenizer, test, progress=progress)
    keys = ("fid", "inception_score", "precision", "recall", "class_accuracy", "num_samples")
    return {**{k: quality[k] for k in keys}, "test_loss": loss["L_mean"], "test_loss_last_scale": loss["L_tail"]}


def time_rows(config: AblationConfig) -> dict[str, float]:
    """Sampling images/s of every row, measured one after another in this process (warm-up first)."""
    speeds = {}
    labels = [i % 10 for i in range(config.timing_images)]
    for row in config.selected_rows:
        pipe = _pipeline(config, row.model)
        settings = config.settings(row)
        pipe.generate(labels[: min(10, len(labels))], seed=0, settings=settings)
        start = time.perf_counter()
        pipe.generate(labels, seed=1, settings=settings)
        speeds[row.name] = config.timing_images / (time.perf_counter() - start)
    return speeds


def run_ablation(config: AblationConfig, progress: bool = True) -> list[dict]:
    """Train, sample, evaluate and time every row; write results.json, table.md and the two figures."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    budget = train_models(config, progress)
    results_file = out / "results.json"
    done = {r["row"]: r for r in json.loads(results_file.read_text())} if results_file.is_file() else {}
    results = []
    for row in config.selected_rows:
        if row.name not in done:
            done[row.name] = {"row": row.name, **evaluate_row(config, row, sample_row(config, row, progress), progress)}
            results_file.write_text(json.dumps(list(done.values()), indent=2) + "\n")  # kept after every row
        results.append(done[row.name])
    speeds = time_rows(config)
    for result, row in zip(results, config.selected_rows):
        model = budget[row.model]
        pipe = _pipeline(config, row.model)
        result.update(
            model=row.model,
            parameters=sum(p.numel() for p in pipe.model.parameters()),
            train_images=model["images"],
            train_pflops=model["pflops"],
            top_k=config.settings(row).top_k,
            cfg=config.settings(row).cfg,
            images_per_second=speeds[row.name],
            relative_cost=speeds["AR"] / speeds[row.name],
            paper_fid=PAPER[row.name][0],
            paper_relative_cost=PAPER[row.name][1],
        )
    results_file.write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(markdown_table(results))
    plot_fid_against_cost(results, out / "ablation_fid_vs_cost.png")
    if "+ attn. norm." in config.rows:
        sample_picture(config, out / "ablation_samples.png")
    return results


def markdown_table(results: list[dict]) -> str:
    lines = [
        "| row | parameters | train PFLOPs | FID | IS | class acc. | precision | recall | test loss | images/s | "
        "rel. cost | paper FID | paper rel. cost |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['row']} | {r['parameters'] / 1e6:.2f}M | {r['train_pflops']:.3f} | {r['fid']:.2f} | "
            f"{r['inception_score']:.2f} | {100 * (r['class_accuracy'] or 0):.1f}% | {r['precision']:.3f} | "
            f"{r['recall']:.3f} | {r['test_loss']:.3f} | {r['images_per_second']:.1f} | {r['relative_cost']:.3f} | "
            f"{r['paper_fid']} | {r['paper_relative_cost'] or '—'} |"
        )
    return "\n".join(lines) + "\n"


def plot_fid_against_cost(results: list[dict], path: Path) -> Path:
    """FID against relative inference cost, one point per row (log cost axis), labelled."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for r in results:
        axes.scatter(r["relative_cost"], r["fid"], color="tab:red" if r["row"] == "AR" else "tab:blue")
        axes.annotate(r["row"], (r["relative_cost"], r["fid"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    axes.set_xscale("log")
    axes.set_xlabel("inference cost relative to the AR baseline (wall-clock, same machine)")
    axes.set_ylabel("FID (Fashion-MNIST classifier features)")
    axes.set_title("Ablation: FID against inference cost")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def sample_picture(config: AblationConfig, path: Path, per_class: int = 6) -> Path:
    """AR samples (left) next to VAR samples of equal size and training compute (the "+ attn. norm." row, right),
    one row per class, taken from the evaluation samples."""
    from PIL import Image, ImageDraw

    from nextscale.images import make_grid

    panels = []
    for name in ("AR", "+ attn. norm."):
        with np.load(Path(config.output_dir) / "samples" / f"{_slug(name)}.npz") as arrays:
            images, labels = arrays["arr_0"], arrays["labels"]
        picks = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
        tensor = torch.from_numpy(images[picks]).permute(0, 3, 1, 2).float() / 255
        panels.append(make_grid(tensor, per_class, upscale=max(1, 64 // images.shape[1])))
    header = 24
    canvas = Image.new("RGB", (panels[0].width * 2 + 16, panels[0].height + header), "white")
    canvas.paste(panels[0], (0, header))
    canvas.paste(panels[1], (panels[0].width + 16, header))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 6), "AR (next-token)", fill="black")
    draw.text((panels[0].width + 20, 6), "VAR (next-scale), same size and compute", fill="black")
    canvas.save(path)
    return path


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_").replace("__", "_")
