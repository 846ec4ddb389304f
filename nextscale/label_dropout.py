"""Label dropout, one rule for the model and the trainer: while training, a label becomes the null class with
probability `rate`, so that the same transformer also learns the unconditional distribution that classifier-free
guidance needs (the official trainer's `cond_drop_rate`, 0.1).

The rule takes its uniform draws as an argument, so each caller decides where they come from: `VAR.drop_labels`
draws them from the global generator, one per label, as the official code does (the parity tests check that draw);
the trainer draws them for the whole global batch from a generator keyed by (seed, step), so that 1 process and
N processes drop the same labels.
"""

from __future__ import annotations

import torch


def drop_labels(
    labels_B: torch.Tensor, rate: float, null_class: int, uniform_B: torch.Tensor | None = None
) -> torch.Tensor:
    """`labels_B` with every label whose draw in `uniform_B` (uniform in [0, 1), one per label) is below `rate`
    replaced by `null_class`. Without `uniform_B`, the draws come from the global generator on the labels' device."""
    if uniform_B is None:
        uniform_B = torch.rand(labels_B.shape[0], device=labels_B.device)
    return torch.where(uniform_B.to(labels_B.device) < rate, null_class, labels_B)
