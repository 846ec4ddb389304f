"""Token maps of a whole dataset, encoded once by the frozen tokenizer and kept on disk.

Only valid for datasets whose images carry no random augmentation (the same index always gives the same image);
the cache file is keyed by a fingerprint of the tokenizer weights and the dataset, so a changed tokenizer or dataset
never reuses stale tokens.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from nextscale.data.fashion_mnist import FashionMNIST
from nextscale.data.procedural import ProceduralShapes
from nextscale.distributed import barrier
from nextscale.progress import progress_bar
from nextscale.weights import CheckpointError, load_torch_file

logger = logging.getLogger(__name__)


def is_deterministic(dataset) -> bool:
    """Whether dataset[i] is the same image at every epoch (so its tokens can be cached)."""
    if isinstance(dataset, ProceduralShapes):
        return True
    if isinstance(dataset, FashionMNIST):
        return not (dataset.crop_padding or dataset.hflip)
    return False


def fingerprint(tokenizer, dataset) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(tokenizer.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    first = dataset[0][0]
    digest.update(repr((type(dataset).__name__, len(dataset), dataset.classes, tuple(first.shape))).encode())
    digest.update(first.numpy().tobytes())
    return digest.hexdigest()[:16]


class TokenCache:
    def __init__(self, tokens_NL: torch.Tensor, labels_N: torch.Tensor):
        self.tokens_NL, self.labels_N = tokens_NL, labels_N

    def get(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tokens_NL[indices].long(), self.labels_N[indices].long()

    @classmethod
    @torch.no_grad()
    def build(cls, tokenizer, dataset, directory: Path, ctx, batch_size: int = 256) -> TokenCache:
        """Load the cache for (tokenizer, dataset) from `directory`, encoding it first on the main process. A cache
        file that cannot be read, or holds other than this dataset's tokens, is set aside as `damaged-<name>` (as a
        damaged checkpoint is) and encoded again; a partial file of an interrupted encoding is deleted."""
        path = Path(directory) / f"tokens-{fingerprint(tokenizer, dataset)}.pt"
        expected = (len(dataset), tokenizer.token_space.schedule.total_length, tokenizer.token_space.vocab_size)
        if ctx.dist.is_main_process:
            for partial in path.parent.glob(f"{path.stem}.tmp*"):
                partial.unlink(missing_ok=True)
            if path.is_file():
                try:
                    _read(path, *expected)
                except CheckpointError as err:
                    aside = path.with_name(f"damaged-{path.name}")
                    os.replace(path, aside)
                    logger.warning("%s; kept as %s, encoding the tokens again", err, aside.name)
            if not path.is_file():
                cls._encode(tokenizer, dataset, path, ctx, batch_size)
        barrier()
        return cls(*_read(path, *expected))

    @staticmethod
    def _encode(tokenizer, dataset, path: Path, ctx, batch_size: int) -> None:
        """Encode every image of `dataset` and write the cache file atomically (a partial file, then a rename)."""
        tokens, labels = [], []
        device = ctx.dist.device
        bar = progress_bar(total=len(dataset), description="encoding tokens", unit="img", enabled=ctx.loop.progress)
        for begin in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(begin, min(begin + batch_size, len(dataset)))]
            images = torch.stack([image for image, _ in items]).to(device)
            token_maps = tokenizer.encode(images)
            tokens.append(torch.cat([t.flatten(1) for t in token_maps], dim=1).to(torch.int32).cpu())
            labels.append(torch.tensor([label for _, label in items], dtype=torch.int64))
            bar.update(len(items))
        bar.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"tokens": torch.cat(tokens), "labels": torch.cat(labels)}, partial)
        os.replace(partial, path)
        logger.info("cached the tokens of %d images in %s", len(dataset), path)


def _read(path: Path, num_images: int, tokens_per_image: int, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens_NL, labels_N) of a cache file, checked to be this dataset's: CheckpointError otherwise."""
    data = load_torch_file(path)
    tokens, labels = (data.get("tokens"), data.get("labels")) if isinstance(data, dict) else (None, None)
    if not (isinstance(tokens, torch.Tensor) and isinstance(labels, torch.Tensor)):
        raise CheckpointError(f"token cache {path} is damaged (no tokens and labels tensors)")
    if tuple(tokens.shape) != (num_images, tokens_per_image) or tuple(labels.shape) != (num_images,):
        raise CheckpointError(
            f"token cache {path} is damaged (tokens {tuple(tokens.shape)}, labels {tuple(labels.shape)}; "
            f"expected ({num_images}, {tokens_per_image}) and ({num_images},))"
        )
    if tokens.is_floating_point() or (tokens.numel() and not 0 <= int(tokens.min()) <= int(tokens.max()) < vocab_size):
        raise CheckpointError(f"token cache {path} is damaged (token ids outside [0, {vocab_size}))")
    return tokens, labels
