"""nextscale: VAR (Visual AutoRegressive modeling), image generation by next-scale prediction.

tokenizer, model = nextscale.load_official("vae_ch160v4096z32.pth", "var_d16.pth")
out = nextscale.generate(model, tokenizer, [207, 360], "demo", seed=0)  # or cfg=4.0, top_k=900, top_p=0.95
out.images  # (2, 3, 256, 256) in [0, 1]

pipe = nextscale.Pipeline.from_pretrained("runs/var/model")  # or Pipeline.from_official(...)
pipe.generate(["class name", 3], seed=0, output_type="pil")

The names below are imported on first use: `import nextscale.cli` must not load torch, so that the command line
answers --help and argument mistakes at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nextscale.errors import UsageError
from nextscale.lazy_exports import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "load_official": "nextscale.convert",
    "box_mask": "nextscale.editing",
    "edit": "nextscale.editing",
    "edit_strip": "nextscale.editing",
    "keep_mask_for": "nextscale.editing",
    "VAR_PRESETS": "nextscale.model.config",
    "VARConfig": "nextscale.model.config",
    "var_preset": "nextscale.model.config",
    "VAR": "nextscale.model.var",
    "Pipeline": "nextscale.pipeline",
    "from_pretrained": "nextscale.pretrained",
    "save_pretrained": "nextscale.pretrained",
    "SAMPLING_PRESETS": "nextscale.sampling_settings",
    "Generation": "nextscale.sampling",
    "SamplingSettings": "nextscale.sampling_settings",
    "generate": "nextscale.sampling",
    "SCHEDULES": "nextscale.scales",
    "ScaleSchedule": "nextscale.scales",
    "TokenSpace": "nextscale.token_space",
    "TOKENIZER_PRESETS": "nextscale.tokenizer.config",
    "Tokenizer": "nextscale.tokenizer.tokenizer",
    "TokenizerConfig": "nextscale.tokenizer.config",
    "tokenizer_preset": "nextscale.tokenizer.config",
    "CheckpointError": "nextscale.weights",
}

__all__ = [
    "CheckpointError",
    "Generation",
    "Pipeline",
    "SAMPLING_PRESETS",
    "SCHEDULES",
    "SamplingSettings",
    "ScaleSchedule",
    "TOKENIZER_PRESETS",
    "TokenSpace",
    "Tokenizer",
    "TokenizerConfig",
    "UsageError",
    "VAR",
    "VARConfig",
    "VAR_PRESETS",
    "box_mask",
    "edit",
    "edit_strip",
    "from_pretrained",
    "generate",
    "keep_mask_for",
    "load_official",
    "save_pretrained",
    "tokenizer_preset",
    "var_preset",
]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from nextscale.convert import load_official
    from nextscale.editing import box_mask, edit, edit_strip, keep_mask_for
    from nextscale.model.config import VAR_PRESETS, VARConfig, var_preset
    from nextscale.model.var import VAR
    from nextscale.pipeline import Pipeline
    from nextscale.pretrained import from_pretrained, save_pretrained
    from nextscale.sampling import SAMPLING_PRESETS, Generation, SamplingSettings, generate
    from nextscale.scales import SCHEDULES, ScaleSchedule
    from nextscale.token_space import TokenSpace
    from nextscale.tokenizer.tokenizer import TOKENIZER_PRESETS, Tokenizer, TokenizerConfig, tokenizer_preset
    from nextscale.weights import CheckpointError
