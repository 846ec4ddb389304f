"""Progress bars for every long loop of the library (training, encoding, evaluation, sampling), quiet on the
processes that are not the main one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress_bar(
    iterable: Iterable | None = None,
    total: int | None = None,
    description: str | None = None,
    enabled: bool = True,
    **kwargs: Any,
) -> tqdm:
    """A tqdm bar that is silent when `enabled` is False (non-zero ranks, --no-progress)."""
    return tqdm(iterable, total=total, desc=description, disable=not enabled, dynamic_ncols=True, **kwargs)
