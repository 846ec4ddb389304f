"""The token space: what a tokenizer's tokens are, and therefore what a transformer over them predicts and reads.

A token space is three facts: the codebook size V, the width Cvae of the code vectors (the transformer's input is
the tokenizer's f̂ resized to each scale, Cvae channels), and the scale schedule. The tokenizer owns them
(`TokenizerConfig.token_space`); a transformer is built from the tokenizer's token space (`VAR(config, token_space)`)
and never states them itself, so the two cannot disagree. A saved transformer records the token space it was trained
for, which lets loading refuse a tokenizer that does not fit (`require_same_token_space`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from nextscale.errors import UsageError
from nextscale.scales import ScaleSchedule, parse_patch_nums


@dataclass(frozen=True)
class TokenSpace:
    """Vocabulary, latent channels and scale schedule of a tokenizer. Immutable; equal when the three are equal."""

    vocab_size: int  # V: codes in the shared codebook
    latent_channels: int  # Cvae: width of a code vector and of f̂
    patch_nums: tuple[int, ...]  # token-map sides, coarsest first

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_nums", parse_patch_nums(self.patch_nums))
        ScaleSchedule(self.patch_nums)  # validates the sides
        if self.vocab_size < 2:
            raise UsageError(f"vocab_size must be at least 2, got {self.vocab_size}")
        if self.latent_channels < 1:
            raise UsageError(f"latent_channels must be positive, got {self.latent_channels}")

    @cached_property
    def schedule(self) -> ScaleSchedule:
        return ScaleSchedule(self.patch_nums)

    @classmethod
    def from_dict(cls, data: dict) -> TokenSpace:
        unknown = sorted(set(data) - {"vocab_size", "latent_channels", "patch_nums"})
        if unknown:
            raise UsageError(f"a token space has no fields {unknown}")
        return cls(int(data["vocab_size"]), int(data["latent_channels"]), tuple(data["patch_nums"]))

    def to_dict(self) -> dict:
        return {
            "vocab_size": self.vocab_size,
            "latent_channels": self.latent_channels,
            "patch_nums": list(self.patch_nums),
        }

    def __str__(self) -> str:
        return f"vocabulary {self.vocab_size}, {self.latent_channels} latent channels, scales {self.schedule}"


def require_same_token_space(tokenizer_space: TokenSpace, model_space: TokenSpace, model_name: str = "transformer"):
    """Raise a one-line ValueError when a transformer was built for another token space than the tokenizer's."""
    if tokenizer_space != model_space:
        raise UsageError(
            f"the {model_name} was built for another tokenizer: it expects {model_space}, "
            f"the tokenizer has {tokenizer_space}"
        )
