"""The demo's one door into the library: where the model comes from, its facts, and sampling and editing with a
preview after each scale.

Every call the demo makes into `Pipeline`, `nextscale.generate` and `nextscale.editing` is in this file, so a change
of the library's API touches the demo here only. The sampler is called directly rather than through
`Pipeline.generate` / `Pipeline.edit` because those do not pass on the per-scale callback (`on_scale`); the calls do
what the pipeline's do otherwise (same settings, seed, autocast and image preparation), which the tests check.

Letters: B batch, H/W image side, h/w token grid side.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from PIL import Image

from nextscale.editing import edit, fit_image, keep_mask_for
from nextscale.errors import UsageError
from nextscale.model.var import VAR
from nextscale.pipeline import Pipeline
from nextscale.pretrained import load_refiner, read_metadata, resolve_model
from nextscale.sampling import SamplingSettings, generate

# preview(k, previews_B3HW in [0, 1]) after scale k, for every scale but the last (whose decode is the image)
PreviewCallback = Callable[[int, torch.Tensor], None]


@dataclass(frozen=True)
class ModelSource:
    """How to load the model, kept as the `nextscale` flags that name it (for the reproducing command lines)."""

    model: str | None = None  # a model directory, or the name of a shipped model ("fmnist")
    vae: str | None = None  # official tokenizer checkpoint, with `var`
    var: str | None = None
    num_heads: int | None = None  # heads of an official plain-attention checkpoint
    device: str = "cpu"
    bf16: bool = False  # run under bf16 autocast
    fast: bool = False  # prepare the models for fast inference (see nextscale.inference)
    quantize: str | None = None  # "int8": the transformers' block linears dynamically quantised (CPU, fp32)
    # a second model directory (or shipped name) on the same tokenizer: draws the scales from a sample request's
    # handover_scale on (collaborative decoding; edits use the first model alone)
    refiner: str | None = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.vae is None or self.var is None):
            raise UsageError("give a model directory, or both an official tokenizer (vae) and transformer (var)")

    def load(self) -> DemoModel:
        dtype = torch.bfloat16 if self.bf16 else torch.float32
        if self.model is not None:  # with `fast`, the model's measured fast recipe too (as `nextscale demo --fast`)
            pipeline = Pipeline.from_pretrained(
                self.model, device=self.device, dtype=dtype, quantize=self.quantize, fast=self.fast,
                refiner=self._load_refiner()
            )  # fmt: skip
            return DemoModel(pipeline)
        for what, path in (("tokenizer", self.vae), ("transformer", self.var)):
            if ("/" in path or path.endswith((".pth", ".pt"))) and not Path(path).is_file():
                raise FileNotFoundError(f"official {what} checkpoint not found: {path}")
        pipeline = Pipeline.from_official(self.vae, self.var, num_heads=self.num_heads, device=self.device, dtype=dtype)
        return DemoModel(replace(pipeline, fast=self.fast, refiner=self._load_refiner(), quantize=self.quantize))

    def _load_refiner(self) -> VAR | None:
        return None if self.refiner is None else load_refiner(self.refiner, self.device)

    def metadata(self) -> dict:
        """The model directory's `nextscale.json` ({} for official checkpoints): class names, training data."""
        if self.model is None or not resolve_model(self.model).is_dir():
            return {}
        return read_metadata(self.model)

    @property
    def precision(self) -> str:
        return (
            ("bf16" if self.bf16 else "fp32")
            + (", fast" if self.fast else "")
            + (f", {self.quantize}" if self.quantize else "")
        )

    @property
    def label(self) -> str:
        """What the page calls the model: the directory or shipped name (with a shipped model's description), or the
        two official files."""
        if self.model is None:
            return f"{Path(self.vae).name} + {Path(self.var).name}"
        return _named(self.model)

    @property
    def refiner_label(self) -> str | None:
        """What the page calls the refiner (as `label` a model directory), None without one."""
        return None if self.refiner is None else _named(self.refiner)

    def cli_flags(self, refiner: bool = True) -> list[str]:
        """The flags that load this model; `refiner=False` leaves the refiner out (for `nextscale edit`, which draws
        with the first model alone)."""

        def where(path: str) -> str:  # absolute when it is a file or folder here, else a name to resolve
            return str(Path(path).resolve()) if Path(path).exists() else path

        if self.model is not None:
            flags = ["--model", where(self.model)]
        else:
            flags = ["--vae", where(self.vae), "--var", where(self.var)]
            if self.num_heads is not None:
                flags += ["--num-heads", str(self.num_heads)]
        if refiner and self.refiner is not None:
            flags += ["--refiner", where(self.refiner)]
        flags += ["--device", self.device]
        flags += ["--quantize", self.quantize] if self.quantize else []
        return flags + (["--bf16"] if self.bf16 else []) + (["--fast"] if self.fast else [])


def _named(model: str) -> str:
    """A model directory or shipped name, with a shipped model's description."""
    description = read_metadata(model).get("shipped", {}).get("description")
    return f"{model} ({description})" if description else model


class DemoModel:
    """A loaded `Pipeline` seen as the demo needs it. Refuses models that cannot draw scale by scale.

    With a refiner (`Pipeline.refiner`), samples are drawn collaboratively: the pipeline's model drafts the scales
    before the settings' `handover_scale`, the refiner draws the rest. Edits use the pipeline's model alone."""

    def __init__(self, pipeline: Pipeline) -> None:
        model, refiner = pipeline.model, pipeline.refiner
        for role, transformer in (("model", model), ("refiner", refiner)):
            if transformer is not None and not isinstance(transformer, VAR):
                name = type(transformer).__name__
                raise UsageError(
                    f"the demo shows next-scale prediction and editing; this {role} is a {name}, not a VAR"
                )
        if refiner is not None and refiner.num_classes != model.num_classes:
            raise UsageError(f"the refiner has {refiner.num_classes} classes, the model {model.num_classes}")
        self.pipeline = pipeline

    # ---- facts -------------------------------------------------------------------------------------------------------

    @property
    def image_size(self) -> int:
        return self.pipeline.image_size

    @property
    def token_side(self) -> int:
        """Side of the finest token grid, where edit regions live."""
        return self.pipeline.token_side

    @property
    def scale_sides(self) -> list[int]:
        return list(self.pipeline.model.schedule.patch_nums)

    @property
    def num_classes(self) -> int:
        return self.pipeline.num_classes

    @property
    def class_names(self) -> list[str] | None:
        return self.pipeline.class_names

    @property
    def has_refiner(self) -> bool:
        return self.pipeline.refiner is not None

    @property
    def default_settings(self) -> SamplingSettings:
        """The pipeline's settings; without a refiner nothing hands over, whatever they record."""
        settings = self.pipeline.settings
        return settings if self.has_refiner else replace(settings, handover_scale=0)

    def class_index(self, value: int | str) -> int:
        """A class id or name → the id in [0, num_classes); ValueError with a one-line message otherwise."""
        if isinstance(value, str):
            return self.pipeline.class_index(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.num_classes:
            raise UsageError(f"class {value!r} is not a class id in [0, {self.num_classes}) or a name")
        return value

    def class_name(self, label: int) -> str:
        return self.class_names[label] if self.class_names else f"class {label}"

    # ---- images and masks --------------------------------------------------------------------------------------------

    def fit(self, image: Image.Image) -> tuple[Image.Image, bool]:
        """Centre-crop and resize to the model's size, as editing does; (image, whether it changed)."""
        return fit_image(image.convert("RGB"), self.image_size)

    def keep_mask(self, regenerate_hw: torch.Tensor) -> torch.Tensor:
        """(side, side) 1 = regenerate → the editor's keep mask (1 = keep); ValueError when it keeps or redraws
        everything."""
        return keep_mask_for("inpaint", side=self.token_side, mask_image=regenerate_hw)

    # ---- drawing -----------------------------------------------------------------------------------------------------

    def sample(
        self, labels: list[int], seed: int, settings: SamplingSettings, preview: PreviewCallback | None = None
    ) -> torch.Tensor:
        """`Pipeline.generate(labels, seed=seed, settings=settings)` with previews: (B, 3, H, W) in [0, 1]. With a
        refiner it draws the scales from `settings.handover_scale` on (0: the model alone)."""
        pipeline = self.pipeline
        out = generate(
            pipeline.model,
            pipeline.tokenizer,
            labels,
            settings,
            seed=seed,
            autocast_dtype=pipeline.autocast_dtype,
            on_scale=self._on_scale(preview),
            refiner=pipeline.refiner,
        )
        return out.images

    def edit(
        self,
        image: Image.Image,
        keep_hw: torch.Tensor,
        label: int | None,
        samples: int,
        seed: int,
        settings: SamplingSettings,
        preview: PreviewCallback | None = None,
    ) -> torch.Tensor:
        """`Pipeline.edit(image, keep_hw, labels=label, samples=samples, seed=seed, settings=settings)` with
        previews: (samples, 3, H, W) in [0, 1]. Editing has no refiner (as `Pipeline.edit`): the pipeline's model
        draws every scale, whatever `settings.handover_scale` says."""
        pipeline = self.pipeline
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
            on_scale=self._on_scale(preview),
        )
        return out.images

    def _on_scale(self, preview: PreviewCallback | None):
        """The sampler's `on_scale(k, f_hat, token_map)` → `preview(k, the tokenizer's decode of f̂ in [0, 1])`."""
        if preview is None:
            return None
        tokenizer, cast_dtype, last = self.pipeline.tokenizer, self.pipeline.autocast_dtype, len(self.scale_sides) - 1

        def on_scale(k: int, f_hat_BChw: torch.Tensor, token_map_Bhw: torch.Tensor) -> None:
            if k == last:  # the decode after the last scale is the image itself
                return
            device_type = f_hat_BChw.device.type
            cast = torch.autocast(device_type, dtype=cast_dtype) if cast_dtype is not None else nullcontext()
            with torch.no_grad(), cast:
                previews_B3HW = tokenizer.decode_fhat(f_hat_BChw).float().add(1).mul(0.5)
            preview(k, previews_B3HW)

        return on_scale
