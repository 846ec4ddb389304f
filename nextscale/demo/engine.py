"""The model side of the demo: checked requests in, events with images out. No web framework here.

A request is first `prepare_*`d (every check that can fail does so there, so the page gets a 4xx before any work),
which returns a `Job`; running the job emits events as plain dicts:

    {"event": "start", "count": B, "sides": [1, 2, …]}
    {"event": "scale", "index": k, "side": s, "previews": [PNG data URL × B]}     after each scale but the last
    {"event": "done", "images": [...], "settings": {...}, "command": "nextscale sample …", …}

The previews are the tokenizer's decode of f̂ after each scale (coarse to fine), when the request asks for them; the
decode after the last scale is the image itself, so it is not sent twice. `sample_images` and `edit_images` are
the only calls into the sampler: they do what `Pipeline.generate` / `Pipeline.edit` do, plus the per-scale callback.
Letters: B batch, H/W image side, h/w token grid side.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from nextscale.demo.examples import Example
from nextscale.demo.pngs import pil_to_data_url, tensors_to_data_urls
from nextscale.demo.requests import DemoLimits, DemoRequestError, EditRequest, SampleRequest
from nextscale.editing import edit, fit_image, keep_mask_for
from nextscale.images import to_pil
from nextscale.pipeline import Pipeline
from nextscale.sampling import SamplingSettings, ScaleCallback, generate

Emit = Callable[[dict], None]

EDIT_DEFAULTS = "edit"  # the sampling preset the edit form starts from (the official editing notebook's)


# ---- the calls into the sampler (one place to follow Pipeline's signature) ---------------------------------------


def sample_images(
    pipeline: Pipeline, labels: list[int], seed: int, settings: SamplingSettings, on_scale: ScaleCallback | None
) -> torch.Tensor:
    """`pipeline.generate(labels, seed=seed, settings=settings)` with a per-scale callback: (B, 3, H, W) in [0, 1]."""
    out = generate(
        pipeline.model,
        pipeline.tokenizer,
        labels,
        settings,
        seed=seed,
        autocast_dtype=pipeline.autocast_dtype,
        on_scale=on_scale,
    )
    return out.images


def edit_images(
    pipeline: Pipeline,
    image: Image.Image,
    keep_hw: torch.Tensor,
    label: int | None,
    samples: int,
    seed: int,
    settings: SamplingSettings,
    on_scale: ScaleCallback | None,
) -> torch.Tensor:
    """`pipeline.edit(image, keep_hw, labels=label, samples=samples, seed=seed, settings=settings)` with a per-scale
    callback: (samples, 3, H, W) in [0, 1]."""
    images_B3HW = pipeline.image_tensor(image).repeat_interleave(samples, dim=0)
    out = edit(
        pipeline.model,
        pipeline.tokenizer,
        images_B3HW.mul(2).sub(1),
        keep_hw,
        label,
        settings,
        seed=seed,
        autocast_dtype=pipeline.autocast_dtype,
        on_scale=on_scale,
    )
    return out.images


# ---- where the model came from -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSource:
    """How to load the model, kept as the `nextscale` flags that name it (for the reproducing command lines)."""

    model: str | None = None  # a model directory (or, later, the name of a shipped model)
    vae: str | None = None  # official tokenizer checkpoint, with `var`
    var: str | None = None
    num_heads: int | None = None  # heads of an official plain-attention checkpoint
    device: str = "cpu"
    bf16: bool = False  # run under bf16 autocast
    fast: bool = False  # prepare the models for fast inference (see nextscale.inference)

    def __post_init__(self) -> None:
        if (self.model is None) == (self.vae is None or self.var is None):
            raise ValueError("give a model directory, or both an official tokenizer (vae) and transformer (var)")

    def load(self) -> Pipeline:
        dtype = torch.bfloat16 if self.bf16 else torch.float32
        if self.model is not None:
            pipeline = Pipeline.from_pretrained(self.model, device=self.device, dtype=dtype)
        else:
            for what, path in (("tokenizer", self.vae), ("transformer", self.var)):
                if ("/" in path or path.endswith((".pth", ".pt"))) and not Path(path).is_file():
                    raise FileNotFoundError(f"official {what} checkpoint not found: {path}")
            pipeline = Pipeline.from_official(
                self.vae, self.var, num_heads=self.num_heads, device=self.device, dtype=dtype
            )
        return replace(pipeline, fast=True) if self.fast else pipeline

    @property
    def precision(self) -> str:
        return ("bf16" if self.bf16 else "fp32") + (", fast" if self.fast else "")

    @property
    def label(self) -> str:
        return self.model if self.model is not None else f"{Path(self.vae).name} + {Path(self.var).name}"

    def cli_flags(self) -> list[str]:
        def where(path: str) -> str:  # absolute when it is a file or folder here, else a name to resolve
            return str(Path(path).resolve()) if Path(path).exists() else path

        if self.model is not None:
            flags = ["--model", where(self.model)]
        else:
            flags = ["--vae", where(self.vae), "--var", where(self.var)]
            if self.num_heads is not None:
                flags += ["--num-heads", str(self.num_heads)]
        flags += ["--device", self.device]
        return flags + (["--bf16"] if self.bf16 else []) + (["--fast"] if self.fast else [])


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def settings_flags(settings: SamplingSettings) -> list[str]:
    return [
        "--cfg",
        _number(settings.cfg),
        "--top-k",
        str(settings.top_k),
        "--top-p",
        _number(settings.top_p),
        "--more-smooth" if settings.more_smooth else "--no-more-smooth",
    ]


# ---- jobs ------------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """A checked request, ready to run: `run(emit)` emits the events and returns when the last one is out."""

    run: Callable[[Emit], None]


class DemoEngine:
    """One pipeline shared by all requests; jobs run one at a time (`lock`)."""

    def __init__(
        self, pipeline: Pipeline, source: ModelSource, limits: DemoLimits, examples: list[Example] | None = None
    ) -> None:
        self.pipeline = pipeline
        self.source = source
        self.limits = limits
        self.examples = examples or []
        self.sample_defaults = pipeline.settings
        self.edit_defaults = SamplingSettings.preset(EDIT_DEFAULTS)
        self.lock = threading.Lock()
        self._examples_json = [
            {"name": example.name, "label": example.label, "image": pil_to_data_url(example.image)}
            for example in self.examples
        ]

    # ---- facts for the page ------------------------------------------------------------------------------------------

    def class_name(self, label: int) -> str:
        names = self.pipeline.class_names
        return names[label] if names else f"class {label}"

    def info(self) -> dict:
        pipeline = self.pipeline
        return {
            "model": self.source.label,
            "device": self.source.device,
            "precision": self.source.precision,
            "image_size": pipeline.image_size,
            "token_side": pipeline.token_side,
            "scales": list(pipeline.model.schedule.patch_nums),
            "num_classes": pipeline.num_classes,
            "class_names": pipeline.class_names,
            "defaults": {"sample": asdict(self.sample_defaults), "edit": asdict(self.edit_defaults)},
            "limits": {"max_images": self.limits.max_images, "max_cfg": self.limits.max_cfg},
            "examples": self._examples_json,
        }

    def fit_upload(self, image: Image.Image) -> dict:
        """An uploaded picture → the model's size (centre crop, resize), as the page will show and send it back."""
        size = self.pipeline.image_size
        fitted, changed = fit_image(image, size)
        width, height = image.size
        note = f"centre-cropped and resized from {width}×{height} to {size}×{size}" if changed else ""
        return {"image": pil_to_data_url(fitted), "note": note}

    # ---- sampling ----------------------------------------------------------------------------------------------------

    def prepare_sample(self, request: SampleRequest) -> Job:
        labels = request.labels
        settings = request.settings
        record = {
            "model": self.source.label,
            "classes": request.classes,
            "class_names": [self.class_name(c) for c in request.classes],
            "per_class": request.per_class,
            "seed": request.seed,
            **asdict(settings),
            "device": self.source.device,
            "precision": self.source.precision,
        }
        command = ["nextscale", "sample", *self.source.cli_flags()]
        for c in request.classes:
            command += ["--class", str(c)]
        command += ["--per-class", str(request.per_class), "--batch-size", str(len(labels))]
        command += ["--seed", str(request.seed), *settings_flags(settings), "--out", "samples.png"]

        def run(emit: Emit) -> None:
            with self.lock:
                started = time.perf_counter()
                emit({"event": "start", "count": len(labels), "sides": self._sides()})
                on_scale = self._preview_callback(emit) if request.previews else None
                images = sample_images(self.pipeline, labels, request.seed, settings, on_scale)
                seconds = time.perf_counter() - started
            emit(
                {
                    "event": "done",
                    "kind": "sample",
                    "images": tensors_to_data_urls(images),
                    "labels": labels,
                    "label_names": [self.class_name(c) for c in labels],
                    "settings": record,
                    "command": shlex.join(command),
                    "seconds": round(seconds, 3),
                }
            )

        return Job(run)

    # ---- editing -----------------------------------------------------------------------------------------------------

    def prepare_edit(self, request: EditRequest) -> Job:
        pipeline = self.pipeline
        side, size = pipeline.token_side, pipeline.image_size
        image, _ = fit_image(request.image, size)
        regenerate_hw = request.regenerate_hw
        try:
            keep_hw = keep_mask_for(request.mode, side=side, mask_image=regenerate_hw)
        except ValueError as err:
            raise DemoRequestError(str(err)) from None
        # the mask file for the command line: white = regenerate, at the image's size (area-averages back exactly)
        mask_11HW = F.interpolate(regenerate_hw[None, None], size=(size, size), mode="nearest")
        mask_picture = to_pil(mask_11HW.expand(1, 3, size, size))[0]
        record = {
            "model": self.source.label,
            "mode": request.mode,
            "class": request.label,
            "class_name": None if request.label is None else self.class_name(request.label),
            "samples": request.samples,
            "seed": request.seed,
            **asdict(request.settings),
            "regenerated_tokens": int(regenerate_hw.sum().item()),
            "token_grid": f"{side}×{side}",
            "device": self.source.device,
            "precision": self.source.precision,
        }
        command = ["nextscale", "edit", *self.source.cli_flags(), "--image", "input.png", "--mask", "mask.png"]
        command += ["--mode", request.mode]
        if request.label is not None:
            command += ["--class", str(request.label)]
        command += ["--samples", str(request.samples), "--seed", str(request.seed)]
        command += [*settings_flags(request.settings), "--out", "edit.png"]

        def run(emit: Emit) -> None:
            with self.lock:
                started = time.perf_counter()
                emit({"event": "start", "count": request.samples, "sides": self._sides()})
                on_scale = self._preview_callback(emit) if request.previews else None
                images = edit_images(
                    pipeline, image, keep_hw, request.label, request.samples, request.seed, request.settings, on_scale
                )
                seconds = time.perf_counter() - started
            emit(
                {
                    "event": "done",
                    "kind": "edit",
                    "images": tensors_to_data_urls(images),
                    "input": pil_to_data_url(image),
                    "mask": pil_to_data_url(mask_picture),
                    "regenerate": regenerate_hw.int().tolist(),
                    "settings": record,
                    "command": shlex.join(command),
                    "seconds": round(seconds, 3),
                }
            )

        return Job(run)

    # ---- shared ------------------------------------------------------------------------------------------------------

    def _sides(self) -> list[int]:
        return list(self.pipeline.model.schedule.patch_nums)

    def _preview_callback(self, emit: Emit) -> ScaleCallback:
        """After scale k < K-1: decode f̂ so far (the image as the tokens up to this scale draw it) and emit it."""
        tokenizer, cast_dtype, sides = self.pipeline.tokenizer, self.pipeline.autocast_dtype, self._sides()

        def on_scale(k: int, f_hat_BCHW: torch.Tensor, token_map_Bhw: torch.Tensor) -> None:
            if k == len(sides) - 1:  # the decode after the last scale is the image itself, sent with "done"
                return
            device_type = f_hat_BCHW.device.type
            cast = torch.autocast(device_type, dtype=cast_dtype) if cast_dtype is not None else nullcontext()
            with torch.no_grad(), cast:
                previews_B3HW = tokenizer.decode_fhat(f_hat_BCHW).float().add(1).mul(0.5)
            emit({"event": "scale", "index": k, "side": sides[k], "previews": tensors_to_data_urls(previews_B3HW)})

        return on_scale
