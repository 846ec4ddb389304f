"""How the next-scale sampler draws tokens (`SamplingSettings`) and the named settings (`SAMPLING_PRESETS`). Nothing
here imports torch, so that the command line builds its sampling options from it before torch loads;
`nextscale.sampling` re-exports both."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from nextscale.errors import UnknownNameError, UsageError


def _require_count(name: str, value, minimum: int, meaning: str = "") -> None:
    """An integer setting (not a bool) of at least `minimum`, or a UsageError naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        note = f" ({meaning})" if meaning else ""
        raise UsageError(f"{name} must be an integer ≥ {minimum}{note}, got {value!r}")


@dataclass(frozen=True)
class SamplingSettings:
    """How the next-scale sampler draws tokens. One object travels from the CLI or the pipeline to the sampler.

    The defaults are the official sampler's own (cfg 1.5, no top-k/top-p filtering, no smoothing); named settings
    are in `SAMPLING_PRESETS` (`SamplingSettings.preset("fid")`). Guidance grows linearly from 0 at the first scale
    to `cfg` at the last. Not here: the seed, the batch and the precision, which belong to each call.
    """

    cfg: float = 1.5  # guidance at the last scale; 0 disables guidance
    top_k: int = 0  # keep the k most likely tokens (0: all)
    top_p: float = 0.0  # keep the smallest set with this much probability mass (0: all)
    more_smooth: bool = False  # feed Gumbel-softmax-smoothed embeddings forward instead of the drawn tokens
    prune_ratio: float = 0.0  # skip this fraction of tokens at the largest scales (FastVAR-style speed-up; 0: off)
    prune_scales: int = 2  # how many of the largest scales prune_ratio applies to
    guidance_scales: int = 0  # guide only the first this many scales, then drop the unconditional rows (0: all)
    handover_scale: int = 0  # with a refiner model, the scale from which it takes over from the drafter (0: never)
    inverse_cdf: bool = False  # draw each token with one uniform number (the same distribution, other tokens)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.cfg) and self.cfg >= 0):
            raise UsageError(f"cfg must be a finite number ≥ 0 (0 disables guidance), got {self.cfg}")
        _require_count("top_k", self.top_k, 0, "0 keeps every token")
        if not 0.0 <= self.top_p <= 1.0:
            raise UsageError(f"top_p must be in [0, 1] (0 keeps every token), got {self.top_p}")
        if not 0.0 <= self.prune_ratio < 1.0:
            raise UsageError(f"prune_ratio must be in [0, 1) (0: no pruning), got {self.prune_ratio}")
        _require_count("prune_scales", self.prune_scales, 1)
        _require_count("guidance_scales", self.guidance_scales, 0, "0: every scale")
        _require_count("handover_scale", self.handover_scale, 0, "0: no handover")

    @classmethod
    def preset(cls, name: str) -> SamplingSettings:
        if name not in SAMPLING_PRESETS:
            raise UnknownNameError(f"unknown sampling preset {name!r}; choose from {', '.join(SAMPLING_PRESETS)}")
        return SAMPLING_PRESETS[name]

    @classmethod
    def resolve(cls, settings: SamplingSettings | str | None = None, **overrides) -> SamplingSettings:
        """A preset name, an object or None (the defaults), with the fields in `overrides` that are not None
        replaced."""
        base = cls() if settings is None else cls.preset(settings) if isinstance(settings, str) else settings
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(f"unknown sampling settings {unknown}; the fields are {', '.join(names)}")
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})


# One table of named settings; the CLI's --preset choices and each command's default come from here.
SAMPLING_PRESETS: dict[str, SamplingSettings] = {
    # the official README's FID evaluation setting (50,000 samples)
    "fid": SamplingSettings(cfg=1.5, top_k=900, top_p=0.96, more_smooth=False),
    # the official demo notebook's (demo_sample.ipynb): `nextscale sample` and Pipeline default
    "demo": SamplingSettings(cfg=4.0, top_k=900, top_p=0.95, more_smooth=False),
    # the README's advice for visual quality: the demo's filters with Gumbel smoothing
    "quality": SamplingSettings(cfg=4.0, top_k=900, top_p=0.95, more_smooth=True),
    # the editing notebook's guidance and filters (demo_zero_shot_edit.ipynb; it also smooths: add more_smooth)
    "edit": SamplingSettings(cfg=3.0, top_k=900, top_p=0.95, more_smooth=False),
}
