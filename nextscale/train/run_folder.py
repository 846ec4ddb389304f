"""A run's output folder: what `--restart` moves aside, and what a run that saved nothing puts back."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

RUN_PARTS = ("checkpoints", "metrics.jsonl", "train.log", "tensorboard", "model")  # what a run writes there


def restart_run(output_dir: str | Path) -> Path | None:
    """Move a previous run out of the way (checkpoints, logs, export) into <output_dir>/replaced-<time>/, so that
    the next run starts over; nothing is deleted. Returns that folder, or None when there was nothing to move."""
    output_dir = Path(output_dir)
    parts = [output_dir / name for name in RUN_PARTS]
    parts = [part for part in parts if part.exists()]
    if not parts:
        return None
    aside = output_dir / time.strftime("replaced-%Y%m%d-%H%M%S")
    aside.mkdir(parents=True)
    for part in parts:
        part.rename(aside / part.name)
    return aside


class RunFolder:
    """What the output folder held before a run, so that a run that fails before saving a checkpoint can leave it
    as it was: what the run created is removed (the folder too when it is new) and train.log is cut back to its old
    length."""

    def __init__(self, path: Path):
        self.path, self.existed = path, path.is_dir()
        self.entries = set(os.listdir(path)) if self.existed else set()
        log = path / "train.log"
        self.log_size = log.stat().st_size if log.is_file() else None

    def restore(self) -> None:
        if not self.path.is_dir():
            return
        for entry in self.path.iterdir():
            if entry.name in self.entries:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        if self.log_size is not None:
            os.truncate(self.path / "train.log", self.log_size)
        if not self.existed and not any(self.path.iterdir()):
            self.path.rmdir()
