"""Metrics out of the training loop: console (stdlib logging), TensorBoard and a JSONL file; throughput and ETA.

Everything here is quiet on non-zero ranks: construct `MetricLogger(..., enabled=ctx.is_main_process)` and
`progress_bar(..., enabled=ctx.is_main_process)`, and call `configure_logging(ctx.is_main_process)` once at start.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

import torch

logger = logging.getLogger(__name__)

PACKAGE_LOGGER = "nextscale"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIRECTORY = "tensorboard"


def configure_logging(is_main_process: bool, log_file: str | os.PathLike | None = None) -> None:
    """Send the `nextscale` loggers to stderr (and `log_file`): INFO on the main process, WARNING elsewhere.

    Replaces the handlers a previous call installed; other loggers and `builtins.print` are left alone.
    """
    package_logger = logging.getLogger(PACKAGE_LOGGER)
    for handler in list(package_logger.handlers):
        if getattr(handler, "_nextscale_handler", False):
            package_logger.removeHandler(handler)
            handler.close()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%m-%d %H:%M:%S")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None and is_main_process:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler._nextscale_handler = True  # type: ignore[attr-defined]
        package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO if is_main_process else logging.WARNING)
    package_logger.propagate = False


def format_eta(seconds: float) -> str:
    """`HH:MM:SS`, with a day count in front past 24 hours (`2d 03:04:05`); `--:--:--` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--:--"
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


def _format_value(value: float) -> str:
    if value == 0 or (1e-3 <= abs(value) < 1e5):
        return f"{value:.4g}"
    return f"{value:.3e}"


def _to_float(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"metric {name!r} is a tensor with {value.numel()} elements, expected one")
        return float(value.detach().item())
    return float(value)


class ThroughputMeter:
    """Images per second, smoothed with an exponential moving average over steps.

    Call `update(images)` after each step; the first call only starts the clock unless `seconds` is given.
    """

    def __init__(self, smoothing: float = 0.9):
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.smoothing = smoothing
        self.images_per_second: float | None = None
        self._last_time: float | None = None

    def reset(self) -> None:
        """Restart the clock (after an evaluation or checkpoint pause, so that time is not counted)."""
        self._last_time = time.perf_counter()

    def update(self, images: int, seconds: float | None = None) -> float | None:
        """Record `images` processed in `seconds` (default: the time since the previous update or reset)."""
        now = time.perf_counter()
        if seconds is None:
            if self._last_time is None:
                self._last_time = now
                return self.images_per_second
            seconds = now - self._last_time
        self._last_time = now
        if seconds <= 0:
            return self.images_per_second
        rate = images / seconds
        if self.images_per_second is None:
            self.images_per_second = rate
        else:
            self.images_per_second = self.smoothing * self.images_per_second + (1.0 - self.smoothing) * rate
        return self.images_per_second

    def eta_seconds(self, remaining_images: int) -> float:
        """Seconds left at the current rate (infinity before the first measurement)."""
        if not self.images_per_second:
            return math.inf
        return remaining_images / self.images_per_second


class MetricLogger:
    """Writes metric dicts to `output_dir/metrics.jsonl`, TensorBoard (`output_dir/tensorboard`) and the console.

    JSONL lines look like `{"step": 100, "time": 1712.3, "train/loss": 5.1, "train/lr": 3e-4}`; the same
    `prefix/name` tags are TensorBoard scalar names. Nothing is created until the first `log`, and nothing at all
    when `enabled` is False.

    A resumed run calls `keep_first_lines(n)` with the count `line_count` had when its checkpoint was saved, so the
    lines logged after that checkpoint (which the run is about to log again) are not repeated.
    """

    def __init__(self, output_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True):
        self.output_dir = Path(output_dir)
        self.enabled = enabled
        self.use_tensorboard = tensorboard
        self._file: TextIO | None = None
        self._writer: Any = None
        self._tensorboard_unavailable = False
        self.line_count = 0  # complete lines in the JSONL file, once `keep_first_lines` has counted them

    def keep_first_lines(self, count: int) -> None:
        """Cut the JSONL file to its first `count` complete lines (fewer if it has fewer), replacing it atomically;
        `line_count` becomes the number kept. A partial last line (a write cut short) never survives."""
        if not self.enabled:
            return
        self.close()
        path = self.output_dir / METRICS_FILE
        if not path.is_file():
            self.line_count = 0
            return
        with open(path, "rb") as file:
            lines = file.read().split(b"\n")[:-1][:count]  # what follows the last newline is unterminated
        temporary = path.with_name(f".{METRICS_FILE}.tmp")
        with open(temporary, "wb") as file:
            file.write(b"".join(line + b"\n" for line in lines))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        self.line_count = len(lines)

    def _open(self) -> None:
        if self._file is not None:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        # Kept open across `log` calls and closed by `close()`.
        self._file = open(self.output_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        if self.use_tensorboard and self._writer is None and not self._tensorboard_unavailable:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: the train extra
            except ImportError as error:
                self._tensorboard_unavailable = True
                logger.warning("TensorBoard logging is off: %s (pip install tensorboard)", error)
            else:
                self._writer = SummaryWriter(log_dir=str(self.output_dir / TENSORBOARD_DIRECTORY))

    def log(self, step: int, metrics: Mapping[str, Any], prefix: str = "train") -> None:
        """Record scalar `metrics` (floats, ints or one-element tensors) at `step`."""
        if not self.enabled:
            return
        self._open()
        values = {f"{prefix}/{name}" if prefix else name: _to_float(name, value) for name, value in metrics.items()}
        record = {"step": int(step), "time": round(time.time(), 3), **values}
        assert self._file is not None
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.line_count += 1
        if self._writer is not None:
            for tag, value in values.items():
                self._writer.add_scalar(tag, value, global_step=step)
        summary = " | ".join(f"{name} {_format_value(_to_float(name, value))}" for name, value in metrics.items())
        logger.info("%s step %d | %s", prefix, step, summary)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
