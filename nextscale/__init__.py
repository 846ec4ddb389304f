"""nextscale: VAR (Visual AutoRegressive modeling), image generation by next-scale prediction.

tokenizer, model = nextscale.load_official("vae_ch160v4096z32.pth", "var_d16.pth")
out = nextscale.generate(model, tokenizer, [207, 360], "demo", seed=0)  # or cfg=4.0, top_k=900, top_p=0.95
out.images  # (2, 3, 256, 256) in [0, 1]

pipe = nextscale.Pipeline.from_pretrained("runs/var/model")  # or Pipeline.from_official(...)
pipe.generate(["class name", 3], seed=0, output_type="pil")
"""

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

__version__ = "0.1.0"

__all__ = [
    "SAMPLING_PRESETS",
    "SCHEDULES",
    "TOKENIZER_PRESETS",
    "VAR",
    "VAR_PRESETS",
    "CheckpointError",
    "Generation",
    "Pipeline",
    "SamplingSettings",
    "ScaleSchedule",
    "TokenSpace",
    "Tokenizer",
    "TokenizerConfig",
    "VARConfig",
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
