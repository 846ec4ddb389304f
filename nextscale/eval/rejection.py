"""Rejection sampling (the VAR paper's "-re" rows): draw M candidates per requested image and keep, for each, the
candidate a classifier scores highest for the requested class.

Written against any `draw(labels, seed) -> images (B, 3, H, W) in [0, 1]` (e.g. a closure over `Pipeline.generate`
with `output_type="pt"`), so it depends on no sampler signature. The requested labels are cut into batches of
`batch_size`; batch b's candidate m is one call `draw(batch labels, derive_seed(seed, b, m))`, so the result depends
only on (seed, batch_size, M, labels), and candidates 0 do not depend on M: `candidates=1` returns exactly them, the
plain-sampling baseline whose scores (`first_scores_N`) measure the gain. Ties keep the earlier candidate.
Cost: M times the sampling time, plus classifying the candidates. Letters: N requested images, B a batch, M candidates.

`nextscale sample-set --rejection M` runs this batch by batch with the Fashion-MNIST classifier as the scorer
(`sample_set.regenerate_batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from nextscale.data.seeding import derive_seed
from nextscale.errors import UsageError
from nextscale.eval.classifier import FashionClassifier

Draw = Callable[[list[int], int], torch.Tensor]  # (labels, seed) → images (B, 3, H, W) in [0, 1]
Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images in [0, 1], labels (B,)) → scores (B,)


@dataclass
class RejectionResult:
    images_N3HW: torch.Tensor  # the kept candidate of each requested image, in [0, 1], in request order
    labels_N: torch.Tensor
    scores_N: torch.Tensor  # the kept candidates' scores
    first_scores_N: torch.Tensor  # the scores of candidate 0 (plain sampling), for the gain
    candidates: int  # M


def classifier_scorer(classifier: FashionClassifier) -> Scorer:
    """Score = the classifier's probability of the requested class."""

    @torch.no_grad()
    def score(images_B3HW: torch.Tensor, labels_B: torch.Tensor) -> torch.Tensor:
        device = next(classifier.parameters()).device
        logits_BV = classifier(images_B3HW.to(device).float() * 2 - 1)
        probabilities_BV = logits_BV.float().softmax(-1).cpu()
        return probabilities_BV.gather(1, labels_B.view(-1, 1).cpu()).squeeze(1)

    return score


def rejection_sample(
    draw: Draw,
    labels: Sequence[int],
    scorer: Scorer,
    *,
    candidates: int,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
) -> RejectionResult:
    """Per requested label, the best of `candidates` drawn images by `scorer`; see the module docstring."""
    if candidates < 1:
        raise UsageError(f"candidates per image must be ≥ 1, got {candidates}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be ≥ 1, got {batch_size}")
    labels = [int(label) for label in labels]
    if not labels:
        raise UsageError("no labels requested")
    batches = [labels[begin : begin + batch_size] for begin in range(0, len(labels), batch_size)]
    kept_images, kept_scores, first_scores = [], [], []
    description = f"rejection sampling ×{candidates}"
    bar = tqdm(total=len(batches) * candidates, unit="draw", desc=description, disable=not progress)
    with bar:
        for batch_index, batch_labels in enumerate(batches):
            labels_B = torch.tensor(batch_labels)
            best_images_B3HW, best_scores_B = None, None
            for candidate in range(candidates):
                images_B3HW = draw(batch_labels, derive_seed(seed, batch_index, candidate)).detach().cpu()
                if images_B3HW.ndim != 4 or len(images_B3HW) != len(batch_labels):
                    raise ValueError(
                        f"draw returned shape {tuple(images_B3HW.shape)} for {len(batch_labels)} labels; "
                        "expected (B, 3, H, W)"
                    )
                scores_B = scorer(images_B3HW, labels_B).float().cpu()
                if best_scores_B is None:
                    best_images_B3HW, best_scores_B = images_B3HW.clone(), scores_B.clone()
                    first_scores.append(scores_B)
                else:
                    better_B = scores_B > best_scores_B  # ties keep the earlier candidate
                    best_images_B3HW[better_B] = images_B3HW[better_B]
                    best_scores_B = torch.where(better_B, scores_B, best_scores_B)
                bar.update(1)
            kept_images.append(best_images_B3HW)
            kept_scores.append(best_scores_B)
    return RejectionResult(
        images_N3HW=torch.cat(kept_images),
        labels_N=torch.tensor(labels),
        scores_N=torch.cat(kept_scores),
        first_scores_N=torch.cat(first_scores),
        candidates=candidates,
    )
