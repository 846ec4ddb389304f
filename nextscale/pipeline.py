"""A tokenizer and a transformer held together with their sampling defaults and class names, ready to use.

    pipe = Pipeline.from_pretrained("runs/var/model", device="cuda", dtype="bf16")
    images = pipe.generate(["tabby cat", 207], seed=0, output_type="pil")
    edited = pipe.edit(Image.open("dog.png"), box=(0.1, 0.1, 0.8, 0.8), mode="inpaint", seed=0)

Everything here calls `nextscale.generate` / `nextscale.edit`; the pipeline only resolves class names, fits input
images, holds the default `SamplingSettings` and the autocast dtype, and converts the output.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image

from nextscale.convert import load_official
from nextscale.editing import edit, fit_image, keep_mask_for
from nextscale.errors import UsageError
from nextscale.images import to_pil
from nextscale.inference import check_compile, check_quantize, prepare_for_inference, prepare_transformer
from nextscale.model.raster import RasterTransformer
from nextscale.model.var import VAR
from nextscale.pretrained import from_pretrained, read_metadata, recorded_fast, recorded_sampling
from nextscale.raster_sampling import generate_raster
from nextscale.sampling import Generation, SamplingSettings, generate, resolve_labels
from nextscale.token_space import require_same_token_space
from nextscale.tokenizer.tokenizer import Tokenizer

DEFAULT_PRESET = "demo"  # the official demo notebook's look; "fid" is the evaluation setting
DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}
OUTPUT_TYPES = ("pt", "pil", "generation")

ClassLike = int | str
LabelsArg = ClassLike | Sequence[ClassLike] | torch.Tensor | None


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    resolved = DTYPES.get(dtype) if isinstance(dtype, str) else dtype
    if resolved not in (torch.float32, torch.bfloat16, torch.float16):
        raise UsageError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return resolved


@dataclass
class Pipeline:
    """A tokenizer and a transformer with default sampling settings, class names and precision.

    `generate` and `edit` take class ids or names and PIL images or tensors, and return tensors in [0, 1], PIL images
    or the whole `Generation`. Keyword overrides (cfg=…, top_k=…) change the settings of one call. It adds no
    algorithm of its own: the sampler and editing are `nextscale.generate` / `nextscale.edit`.
    """

    tokenizer: Tokenizer
    model: VAR
    settings: SamplingSettings | str = DEFAULT_PRESET  # defaults for every call; a name picks SAMPLING_PRESETS
    class_names: list[str] | None = None  # one per class, for labels given by name
    dtype: torch.dtype | str = torch.float32  # fp32 runs as is; bf16 / fp16 run the networks under autocast
    source: str = ""  # where the weights came from, for records such as a sample set's settings.json
    fast: bool = False  # prepare the models for fast inference (nextscale.inference): cast weights, NHWC convs
    refiner: VAR | None = None  # a second transformer on the tokenizer, drawing from settings.handover_scale on
    quantize: str | None = None  # "int8": the transformers' block linears dynamically quantised (CPU, fp32 only)
    compile: bool = False  # torch.compile each transformer's per-scale step (pays for long-running batch-1 sampling)

    def __post_init__(self) -> None:
        self.settings = SamplingSettings.resolve(self.settings)
        self.dtype = resolve_dtype(self.dtype)
        if self.class_names is not None:
            self.class_names = list(self.class_names)
            if len(self.class_names) != self.num_classes:
                raise UsageError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        self.tokenizer.eval()
        self.model.eval()
        if self.refiner is not None:
            require_same_token_space(self.tokenizer.token_space, self.refiner.token_space)
            self.refiner.eval()
        if self.quantize is not None:
            check_quantize(self.quantize, self.dtype)
        check_compile(self.compile, self.quantize)
        if self.fast:
            cast = None if self.dtype == torch.float32 else self.dtype
            prepare_for_inference(self.tokenizer, self.model, dtype=cast)
            if self.refiner is not None:  # the same weights' precision for both transformers
                prepare_transformer(self.refiner, dtype=cast)
        for transformer in (self.model, self.refiner):
            if transformer is not None and (self.quantize is not None or self.compile):
                prepare_transformer(transformer, quantize=self.quantize, compile=self.compile)

    # ---- building -----------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        settings: SamplingSettings | str | None = None,
        quantize: str | None = None,
        fast: bool = False,
        refiner: VAR | None = None,
    ) -> Pipeline:
        """From a directory written by `save_pretrained` (both parts needed); class names from its metadata, and the
        sampling settings it records as its default unless `settings` are given (else the `DEFAULT_PRESET`).
        `quantize="int8"`: see the field. `fast`: the models prepared for fast inference and, where the directory
        records a measured fast recipe (`recorded_fast`), its sampling changes and its quantisation (on a CPU in
        fp32; elsewhere only the sampling changes apply). `refiner`: see the field."""
        tokenizer, model = from_pretrained(directory, device)
        if tokenizer is None or model is None:
            raise UsageError(f"{directory} needs both tokenizer/ and transformer/ for a pipeline")
        classes = read_metadata(directory).get("classes")
        if settings is None:
            settings = recorded_sampling(directory) or DEFAULT_PRESET
        recipe = recorded_fast(directory) if fast else None
        if recipe is not None:
            settings = replace(SamplingSettings.resolve(settings), **recipe.get("sampling", {}))
            if quantize is None and torch.device(device).type == "cpu" and resolve_dtype(dtype) == torch.float32:
                quantize = recipe.get("quantize")
        return cls(tokenizer, model, settings, classes, dtype, source=str(directory), quantize=quantize, fast=fast,
                   refiner=refiner)  # fmt: skip

    @classmethod
    def from_official(
        cls,
        vae: str | os.PathLike,
        var: str | os.PathLike,
        *,
        num_heads: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
        settings: SamplingSettings | str = DEFAULT_PRESET,
        class_names: list[str] | None = None,
    ) -> Pipeline:
        """From official checkpoints (see `load_official`: files, or names to download)."""
        tokenizer, model = load_official(vae, var, num_heads=num_heads, device=device)
        return cls(tokenizer, model, settings, class_names, dtype, source=f"official: {vae} + {var}")

    def to(self, device: str | torch.device) -> Pipeline:
        self.tokenizer.to(device)
        self.model.to(device)
        return self

    # ---- facts ----------------------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.model.pos_embed.device

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    @property
    def image_size(self) -> int:
        return self.tokenizer.config.image_size

    @property
    def token_side(self) -> int:
        """Side of the finest token grid, where keep masks live."""
        return self.model.schedule.final_side

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast precision of the sampler: None for fp32, and for fast pipelines (their weights are cast)."""
        return None if self.dtype == torch.float32 or self.fast else self.dtype

    def class_index(self, label: ClassLike) -> int:
        """A class name or id → the id. Ids are checked where every entry point's labels are, `resolve_labels`: a
        bool or a float is refused, and one negative id means unconditional (the null class `num_classes`), as a
        single label does in `generate`."""
        if isinstance(label, str):
            if not self.class_names or label not in self.class_names:
                known = f"; known: {', '.join(self.class_names[:10])}…" if self.class_names else " (no class names)"
                raise UsageError(f"unknown class name {label!r}{known}")
            return self.class_names.index(label)
        return int(resolve_labels(label, self.num_classes, 1, "cpu", None)[0])

    def labels(self, labels: LabelsArg):
        """Names → ids; everything else passes unchanged to `resolve_labels`, which checks it."""
        if isinstance(labels, str):
            return self.class_index(labels)
        if isinstance(labels, (list, tuple)):
            return [self.class_index(label) if isinstance(label, str) else label for label in labels]
        return labels

    def settings_with(self, settings: SamplingSettings | str | None = None, **overrides) -> SamplingSettings:
        """`settings` (default: the pipeline's) with `overrides` (cfg, top_k, top_p, more_smooth; None leaves a
        field) applied."""
        return SamplingSettings.resolve(self.settings if settings is None else settings, **overrides)

    # ---- generating and editing -----------------------------------------------------------------------------------

    def generate(
        self,
        labels: LabelsArg = None,
        *,
        seed: int | None = None,
        batch_size: int | None = None,
        output_type: str = "pt",
        settings: SamplingSettings | str | None = None,
        **overrides,
    ) -> torch.Tensor | list[Image.Image] | Generation:
        """Class-conditional images: `labels` as `nextscale.generate` takes them, or class names. Returns (B, 3, H, W)
        in [0, 1] ('pt'), PIL images ('pil') or the whole `Generation` with its token maps ('generation')."""
        _check_output_type(output_type)
        if isinstance(self.model, RasterTransformer):
            sample, extra = generate_raster, {}
        else:
            sample, extra = generate, {"refiner": self.refiner}
        out = sample(
            self.model,
            self.tokenizer,
            self.labels(labels),
            self.settings_with(settings, **overrides),
            seed=seed,
            batch_size=batch_size,
            autocast_dtype=self.autocast_dtype,
            **extra,
        )
        return _convert(out, output_type)

    def edit(
        self,
        image: Image.Image | torch.Tensor,
        keep_mask: torch.Tensor | None = None,
        *,
        box: tuple[float, float, float, float] | None = None,
        mask_image: Image.Image | torch.Tensor | None = None,
        mode: str = "inpaint",
        labels: LabelsArg = None,
        samples: int = 1,
        seed: int | None = None,
        output_type: str = "pt",
        settings: SamplingSettings | str | None = None,
        **overrides,
    ) -> torch.Tensor | list[Image.Image] | Generation:
        """Zero-shot editing of one PIL image (centre-cropped and resized to the model's size) or a batch (B, 3, H, W)
        in [0, 1] at the model's size. The region comes from `keep_mask` (token grid, 1 = keep), or from `box` /
        `mask_image` with `mode` (see `nextscale.editing`). `labels=None` in/out-paints unconditionally; a class
        steers the regenerated region (`mode='class-edit'` requires one). `samples` results per image."""
        _check_output_type(output_type)
        if isinstance(self.model, RasterTransformer):
            raise UsageError("zero-shot editing needs a VAR model; the next-token baseline cannot edit")
        if samples < 1:
            raise UsageError(f"samples must be positive, got {samples}")
        if mode == "class-edit" and labels is None:
            raise UsageError("mode 'class-edit' needs a class to edit the region towards")
        if keep_mask is not None and (box is not None or mask_image is not None):
            raise UsageError("give keep_mask, or box / mask_image, not both")
        if keep_mask is None:
            keep_mask = keep_mask_for(mode, side=self.token_side, box=box, mask_image=mask_image)
        images_B3HW = self.image_tensor(image).repeat_interleave(samples, dim=0)
        if keep_mask.dim() == 3:
            keep_mask = keep_mask.repeat_interleave(samples, dim=0)
        out = edit(
            self.model,
            self.tokenizer,
            images_B3HW.mul(2).sub(1),
            keep_mask,
            self.labels(labels),
            self.settings_with(settings, **overrides),
            seed=seed,
            autocast_dtype=self.autocast_dtype,
        )
        return _convert(out, output_type)

    def image_tensor(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """A PIL image (fitted to the model's size) or a tensor (3, H, W) / (B, 3, H, W) in [0, 1] → (B, 3, H, W)
        in [0, 1] on the pipeline's device."""
        if isinstance(image, Image.Image):
            fitted, _ = fit_image(image.convert("RGB"), self.image_size)
            image = torch.from_numpy(np.array(fitted, dtype=np.uint8)).permute(2, 0, 1).float().div(255.0)
        images = image.unsqueeze(0) if image.dim() == 3 else image
        size = self.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise UsageError(f"images must be (B, 3, {size}, {size}) in [0, 1], got {tuple(image.shape)}")
        return images.float().to(self.device)


def _check_output_type(output_type: str) -> None:
    if output_type not in OUTPUT_TYPES:
        raise UsageError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")


def _convert(out: Generation, output_type: str):
    if output_type == "generation":
        return out
    return to_pil(out.images) if output_type == "pil" else out.images
