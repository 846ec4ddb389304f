"""The model side of the demo: checked requests in, events with images out. No web framework here.

A request is first `prepare_*`d (every check that can fail does so there, so the page gets a 4xx before any work),
which returns a `Job`; running the job emits events as plain dicts:

    {"event": "start", "count": B, "sides": [1, 2, …]}
    {"event": "scale", "index": k, "side": s, "previews": [PNG data URL × B]}     after each scale but the last
    {"event": "done", "images": [...], "settings": {...}, "command": "nextscale sample …", …}

The previews are the tokenizer's decode of f̂ after each scale (coarse to fine), when the request asks for them; the
decode after the last scale is the image itself, so it is not sent twice. The model is reached only through
`DemoModel` (model.py). Letters: B batch, H/W image side, h/w token grid side.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from PIL import Image

from nextscale.cli.options import to_argv
from nextscale.demo.examples import Example
from nextscale.demo.model import DemoModel, ModelSource, PreviewCallback
from nextscale.demo.pngs import pil_to_data_url, tensors_to_data_urls
from nextscale.demo.requests import DemoLimits, DemoRequestError, EditRequest, SampleRequest
from nextscale.images import to_pil
from nextscale.sampling import SamplingSettings

Emit = Callable[[dict], None]

EDIT_DEFAULTS = "edit"  # the sampling preset the edit form starts from (the official editing notebook's)
# the presets `nextscale sample` and `nextscale edit` start from when no --preset is given (nextscale/cli/generate.py)
COMMAND_PRESETS = {"sample": "demo", "edit": "edit"}
ALWAYS_SHOWN = ("cfg", "top_k", "top_p", "more_smooth")  # settings written out even when they equal the preset's


# ---- the settings as `nextscale sample` / `nextscale edit` flags -----------------------------------------------------


def settings_flags(settings: SamplingSettings, command: str) -> list[str]:
    """The flags that make `nextscale COMMAND` draw with `settings`: the usual four always, any other field where it
    differs from the command's default preset."""
    preset = SamplingSettings.preset(COMMAND_PRESETS[command])
    values = {
        field.name: getattr(settings, field.name)
        for field in fields(SamplingSettings)
        if field.name in ALWAYS_SHOWN or getattr(settings, field.name) != getattr(preset, field.name)
    }
    return to_argv(values)


# ---- jobs ------------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """A checked request, ready to run: `run(emit)` emits the events and returns when the last one is out."""

    run: Callable[[Emit], None]


class DemoEngine:
    """One model shared by all requests; jobs run one at a time (`lock`). With a refiner, samples hand over to it at
    the request's `handover_scale`; edits use the model alone."""

    def __init__(
        self, model: DemoModel, source: ModelSource, limits: DemoLimits, examples: list[Example] | None = None
    ) -> None:
        if model.has_refiner != (source.refiner is not None):
            raise ValueError("the model source and the loaded model disagree on whether there is a refiner")
        self.model = model
        self.source = source
        self.limits = limits
        self.examples = examples or []
        self.sample_defaults = model.default_settings
        self.edit_defaults = SamplingSettings.preset(EDIT_DEFAULTS)
        self.lock = threading.Lock()
        self._examples_json = [
            {"name": example.name, "label": example.label, "image": pil_to_data_url(example.image)}
            for example in self.examples
        ]

    # ---- facts for the page ------------------------------------------------------------------------------------------

    def info(self) -> dict:
        model = self.model
        return {
            "model": self.source.label,
            "refiner": self.source.refiner_label,  # None without one: the page then offers no handover
            "device": self.source.device,
            "precision": self.source.precision,
            "image_size": model.image_size,
            "token_side": model.token_side,
            "scales": model.scale_sides,
            "num_classes": model.num_classes,
            "class_names": model.class_names,
            "defaults": {"sample": asdict(self.sample_defaults), "edit": asdict(self.edit_defaults)},
            "limits": {"max_images": self.limits.max_images, "max_cfg": self.limits.max_cfg},
            "examples": self._examples_json,
        }

    def fit_upload(self, image: Image.Image) -> dict:
        """An uploaded picture → the model's size (centre crop, resize), as the page will show and send it back."""
        size = self.model.image_size
        fitted, changed = self.model.fit(image)
        width, height = image.size
        note = f"centre-cropped and resized from {width}×{height} to {size}×{size}" if changed else ""
        return {"image": pil_to_data_url(fitted), "note": note}

    # ---- sampling ----------------------------------------------------------------------------------------------------

    def prepare_sample(self, request: SampleRequest) -> Job:
        model, labels, settings = self.model, request.labels, request.settings
        refiner = {"refiner": self.source.refiner_label} if model.has_refiner else {}
        record = {
            "model": self.source.label,
            **refiner,
            "classes": request.classes,
            "class_names": [model.class_name(c) for c in request.classes],
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
        command += ["--seed", str(request.seed), *settings_flags(settings, "sample"), "--out", "samples.png"]

        def run(emit: Emit) -> None:
            with self.lock:
                started = time.perf_counter()
                emit({"event": "start", "count": len(labels), "sides": model.scale_sides})
                preview = self._preview(emit) if request.previews else None
                images = model.sample(labels, request.seed, settings, preview)
                seconds = time.perf_counter() - started
            emit(
                {
                    "event": "done",
                    "kind": "sample",
                    "images": tensors_to_data_urls(images),
                    "labels": labels,
                    "label_names": [model.class_name(c) for c in labels],
                    "settings": record,
                    "command": shlex.join(command),
                    "seconds": round(seconds, 3),
                }
            )

        return Job(run)

    # ---- editing -----------------------------------------------------------------------------------------------------

    def prepare_edit(self, request: EditRequest) -> Job:
        model = self.model
        side, size = model.token_side, model.image_size
        image, _ = model.fit(request.image)
        regenerate_hw = request.regenerate_hw
        try:
            keep_hw = model.keep_mask(regenerate_hw)
        except ValueError as err:
            raise DemoRequestError(str(err)) from None
        # the mask file for the command line: white = regenerate, at the image's size (area-averages back exactly)
        mask_11HW = F.interpolate(regenerate_hw[None, None], size=(size, size), mode="nearest")
        mask_picture = to_pil(mask_11HW.expand(1, 3, size, size))[0]
        record = {
            "model": self.source.label,
            "mode": request.mode,
            "class": request.label,
            "class_name": None if request.label is None else model.class_name(request.label),
            "samples": request.samples,
            "seed": request.seed,
            **asdict(request.settings),
            "regenerated_tokens": int(regenerate_hw.sum().item()),
            "token_grid": f"{side}×{side}",
            "device": self.source.device,
            "precision": self.source.precision,
        }
        # edits draw with the model alone: no --refiner (and the edit preset's handover_scale, 0)
        command = ["nextscale", "edit", *self.source.cli_flags(refiner=False)]
        command += ["--image", "input.png", "--mask", "mask.png", "--mode", request.mode]
        if request.label is not None:
            command += ["--class", str(request.label)]
        command += ["--samples", str(request.samples), "--seed", str(request.seed)]
        command += [*settings_flags(request.settings, "edit"), "--out", "edit.png"]

        def run(emit: Emit) -> None:
            with self.lock:
                started = time.perf_counter()
                emit({"event": "start", "count": request.samples, "sides": model.scale_sides})
                preview = self._preview(emit) if request.previews else None
                images = model.edit(
                    image, keep_hw, request.label, request.samples, request.seed, request.settings, preview
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

    def _preview(self, emit: Emit) -> PreviewCallback:
        """After scale k < K-1: the image as the tokens up to this scale draw it, as a "scale" event."""
        sides = self.model.scale_sides

        def preview(k: int, previews_B3HW: torch.Tensor) -> None:
            emit({"event": "scale", "index": k, "side": sides[k], "previews": tensors_to_data_urls(previews_B3HW)})

        return preview
