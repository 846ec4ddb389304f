"""Checkpoints as directories, written atomically, so that rerunning the same command resumes.

Layout of `<directory>/step_00001234/`:
    <name>.safetensors   one file per tensor dict passed to `save` (for example model.safetensors, ema.safetensors)
    optimizer.pt         the optimizer state dict (torch.save; loads with weights_only=True)
    rng.pt               random-number-generator states from `capture_rng_state` (torch generator states are
                         byte tensors, so they do not go into JSON)
    state.json           run state: step, epoch, sampler position, metrics ...
    config.json          the resolved config of the run
and `<directory>/latest` names the newest complete checkpoint.

A checkpoint is assembled in a hidden temporary sibling directory, every file is fsynced, and the directory is
renamed into place in one step; only then is `latest` replaced (write a temporary file, then os.replace). Pruning
renames an old checkpoint to a hidden temporary name before deleting it. A crash at any point therefore leaves
whole checkpoints under step names, never a partial one; hidden leftovers are removed by the next save.

Checkpoints are never deleted for being damaged or suspect: `load_newest_intact` renames a newer checkpoint that
cannot be read to `damaged-step_*`, and `set_aside_after` (after a divergence) renames checkpoints to
`diverged-step_*`; neither name is loaded, pruned or replaced. A run's state may say `"good": false` (see
`nextscale.train.divergence`): pruning always keeps the newest checkpoint that is not marked so.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file

from nextscale.errors import UsageError
from nextscale.weights import CheckpointError, load_torch_file, write_safetensors

logger = logging.getLogger(__name__)

STEP_DIRECTORY_PATTERN = re.compile(r"^step_(\d{8,})$")
LATEST_FILE = "latest"
TEMPORARY_PREFIX = ".tmp-"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"
TENSORS_SUFFIX = ".safetensors"
RESERVED_TENSOR_NAMES = ("optimizer", "rng", "state", "config")
DAMAGED_PREFIX = "damaged-"  # a checkpoint that could not be read, set aside by load_newest_intact
DIVERGED_PREFIX = "diverged-"  # a checkpoint taken after the loss started to diverge, set aside by the loop
GOOD_STATE_KEY = "good"  # state.json entry: False marks a checkpoint taken while the loss was not healthy


@dataclass
class Checkpoint:
    """What `CheckpointManager.load` returns."""

    path: Path
    step: int
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # file stem -> state dict
    optimizer: dict[str, Any] | None = None
    state: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] | None = None  # as returned by capture_rng_state


# ---------------------------------------------------------------- random-number-generator state


def capture_rng_state() -> dict[str, Any]:
    """The states of python `random`, numpy's global generator, torch CPU and every CUDA device.

    The result holds only ints, floats, strings, lists and tensors, so it round-trips through `torch.save` /
    `torch.load(weights_only=True)`.
    """
    python_version, python_internal, python_gauss = random.getstate()
    numpy_name, numpy_key, numpy_position, numpy_has_gauss, numpy_gauss = np.random.get_state()
    return {
        "python": {"version": python_version, "internal": list(python_internal), "gauss_next": python_gauss},
        "numpy": {
            "bit_generator": str(numpy_name),
            "key": torch.from_numpy(np.asarray(numpy_key, dtype=np.int64)),
            "position": int(numpy_position),
            "has_gauss": int(numpy_has_gauss),
            "cached_gaussian": float(numpy_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by `capture_rng_state`.

    CUDA states are restored when CUDA is available and the number of devices matches; otherwise they are skipped
    with a warning.
    """
    python = state["python"]
    random.setstate((python["version"], tuple(python["internal"]), python["gauss_next"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            numpy_state["key"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states:
        if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda_states):
            torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in cuda_states])
        else:
            logger.warning("checkpoint has %d CUDA generator states; not restoring them here", len(cuda_states))


# ---------------------------------------------------------------- file writing


def _fsync_path(path: Path) -> None:
    """Flush a file or directory that was written through another API to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _tensors_for_safetensors(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors with no storage shared between two entries.

    safetensors refuses tensors that share memory (tied weights, views of one buffer); those are cloned, so a
    tied weight is stored once per name and loads back as independent tensors with the same values.
    """
    prepared: dict[str, torch.Tensor] = {}
    seen_storages: set[int] = set()
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()  # a fresh copy, shares nothing
        else:
            storage = tensor.untyped_storage().data_ptr()
            if storage in seen_storages or not tensor.is_contiguous():
                tensor = tensor.clone(memory_format=torch.contiguous_format)
            seen_storages.add(storage)
        prepared[name] = tensor.contiguous()
    return prepared


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    write_safetensors(_tensors_for_safetensors(tensors), path, metadata={"format": "pt"})
    _fsync_path(path)


def _write_torch(path: Path, obj: Any) -> None:
    with open(path, "wb") as file:
        torch.save(obj, file)
        file.flush()
        os.fsync(file.fileno())


def _write_json(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def _step_of(path: Path) -> int | None:
    match = STEP_DIRECTORY_PATTERN.match(path.name)
    return int(match.group(1)) if match else None


def _is_complete(path: Path) -> bool:
    return path.is_dir() and _step_of(path) is not None and (path / STATE_FILE).is_file()


# errors a damaged file raises while being read (JSON and Unicode errors are ValueErrors)
READ_ERRORS = (OSError, RuntimeError, EOFError, ValueError, SafetensorError)  # torch files: load_torch_file


def _read(path: Path, reader: Callable[[Path], Any]) -> Any:
    """`reader(path)`, with any sign of damage turned into a one-line CheckpointError naming the file."""
    try:
        return reader(path)
    except READ_ERRORS as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is damaged ({reason})") from None


def _read_json_object(path: Path) -> dict[str, Any]:
    data = _read(path, lambda file: json.loads(file.read_text(encoding="utf-8")))
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is damaged (not a JSON object)")
    return data


# ---------------------------------------------------------------- manager


class CheckpointManager:
    """Saves, finds and loads the checkpoints of one run under `directory`.

    Only the main process writes; with `torch.distributed` initialised, every process waits at a barrier at the
    end of `save`, so all ranks leave it with the checkpoint complete on disk. `keep_last` complete checkpoints
    are kept (None keeps all).
    """

    def __init__(self, directory: str | os.PathLike, keep_last: int | None = 3, is_main_process: bool = True):
        if keep_last is not None and keep_last < 1:
            raise UsageError(f"keep_last must be at least 1 or None, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last
        self.is_main_process = is_main_process

    def step_directory(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}"

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints, oldest step first."""
        if not self.directory.is_dir():
            return []
        complete = [path for path in self.directory.iterdir() if _is_complete(path)]
        return sorted(complete, key=lambda path: _step_of(path) or 0)

    def latest(self) -> Path | None:
        """The checkpoint named by `latest` if it is complete, else the complete one with the highest step."""
        pointer = self.directory / LATEST_FILE
        try:
            name = pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else ""
        except (OSError, ValueError):  # an unreadable pointer is only a hint: fall back to the step numbers
            name = ""
        if name:
            candidate = self.directory / name
            if candidate.parent == self.directory and _is_complete(candidate):
                return candidate
        complete = self.checkpoints()
        return complete[-1] if complete else None

    def save(
        self,
        step: int,
        tensors: dict[str, dict[str, torch.Tensor]],
        optimizer_state: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        rng_state: dict[str, Any] | None = None,
    ) -> Path:
        """Write checkpoint `step` and return its directory (on every rank).

        `tensors` maps a file stem to a state dict (`{"model": ..., "ema": ...}`); `state` and `config` must be
        JSON-serialisable; `rng_state` comes from `capture_rng_state()`. Saving a step that already exists
        replaces it.
        """
        final = self.step_directory(step)
        if self.is_main_process:
            self._save_on_main_process(final, tensors, optimizer_state, state, config, rng_state)
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        return final

    def _save_on_main_process(
        self,
        final: Path,
        tensors: dict[str, dict[str, torch.Tensor]],
        optimizer_state: dict[str, Any] | None,
        state: dict[str, Any] | None,
        config: dict[str, Any] | None,
        rng_state: dict[str, Any] | None,
    ) -> None:
        for stem in tensors:
            if not stem or "/" in stem or stem.startswith(".") or stem in RESERVED_TENSOR_NAMES:
                raise ValueError(f"invalid tensor file name {stem!r}")
        # Serialise the JSON first, so a non-serialisable value fails before anything is written.
        state_text = json.dumps(state or {}, indent=2, sort_keys=True)
        config_text = json.dumps(config or {}, indent=2, sort_keys=True)

        self.directory.mkdir(parents=True, exist_ok=True)
        self.remove_temporary_directories()
        temporary = self.directory / f"{TEMPORARY_PREFIX}{final.name}-{uuid.uuid4().hex[:8]}"
        temporary.mkdir()
        for stem, state_dict in tensors.items():
            _write_tensors(temporary / f"{stem}{TENSORS_SUFFIX}", state_dict)
        if optimizer_state is not None:
            _write_torch(temporary / OPTIMIZER_FILE, optimizer_state)
        if rng_state is not None:
            _write_torch(temporary / RNG_FILE, rng_state)
        _write_json(temporary / CONFIG_FILE, config_text)
        _write_json(temporary / STATE_FILE, state_text)  # last: its presence marks a complete directory
        _fsync_path(temporary)

        if final.exists():  # the same step saved again: move the old one aside, then drop it
            replaced = self.directory / f"{TEMPORARY_PREFIX}replaced-{final.name}-{uuid.uuid4().hex[:8]}"
            os.rename(final, replaced)
            os.rename(temporary, final)
            shutil.rmtree(replaced, ignore_errors=True)
        else:
            os.rename(temporary, final)
        _fsync_path(self.directory)
        self._point_latest_to(final)
        self._prune(keep=final)
        logger.info("saved checkpoint %s", final)

    def _point_latest_to(self, checkpoint: Path) -> None:
        pointer = self.directory / LATEST_FILE
        temporary = self.directory / f"{TEMPORARY_PREFIX}{LATEST_FILE}-{uuid.uuid4().hex[:8]}"
        _write_json(temporary, checkpoint.name + "\n")
        os.replace(temporary, pointer)
        _fsync_path(self.directory)

    def _prune(self, keep: Path) -> None:
        """Remove all but the newest `keep_last` checkpoints, sparing `keep` and the newest good one. Each is first
        renamed to a hidden temporary name, so a crash mid-delete leaves debris for the next save, not a partial
        checkpoint under a step name."""
        if self.keep_last is None:
            return
        complete = self.checkpoints()
        spared = {keep, self.newest_good()}
        for old in complete[: max(len(complete) - self.keep_last, 0)]:
            if old not in spared:
                doomed = self.directory / f"{TEMPORARY_PREFIX}pruned-{old.name}-{uuid.uuid4().hex[:8]}"
                os.rename(old, doomed)
                _fsync_path(self.directory)
                shutil.rmtree(doomed, ignore_errors=True)
                logger.debug("removed old checkpoint %s", old)

    def _state_or_none(self, path: Path) -> dict[str, Any] | None:
        try:
            return _read_json_object(path / STATE_FILE)
        except CheckpointError:
            return None

    def newest_good(self, max_step: int | None = None) -> Path | None:
        """The newest readable checkpoint (at most `max_step`) whose state does not say `"good": false`."""
        for path in reversed(self.checkpoints()):
            if max_step is not None and (_step_of(path) or 0) > max_step:
                continue
            state = self._state_or_none(path)
            if state is not None and state.get(GOOD_STATE_KEY, True) is not False:
                return path
        return None

    def _set_aside(self, path: Path, prefix: str) -> Path:
        """Rename checkpoint `path` to `<prefix><name>` (a free name), out of reach of loading and pruning."""
        target = self.directory / f"{prefix}{path.name}"
        while target.exists():
            target = self.directory / f"{prefix}{path.name}-{uuid.uuid4().hex[:6]}"
        os.rename(path, target)
        return target

    def set_aside_after(self, step: int, prefix: str = DIVERGED_PREFIX) -> list[Path]:
        """Rename every checkpoint newer than `step` to `<prefix>step_*` (nothing is deleted) and point `latest` at
        the newest remaining one; returns the new paths. Main process only."""
        if not self.directory.is_dir():  # no checkpoint saved yet: nothing to set aside
            return []
        moved = [self._set_aside(path, prefix) for path in self.checkpoints() if (_step_of(path) or 0) > step]
        remaining = self.checkpoints()
        if remaining:
            self._point_latest_to(remaining[-1])
        else:
            (self.directory / LATEST_FILE).unlink(missing_ok=True)
        _fsync_path(self.directory)
        return moved

    def remove_temporary_directories(self) -> None:
        """Delete what an interrupted save left behind (hidden `.tmp-*` entries)."""
        if not self.directory.is_dir():
            return
        for leftover in self.directory.glob(f"{TEMPORARY_PREFIX}*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
            logger.info("removed the leftover of an interrupted save: %s", leftover.name)

    def load(self, path: str | os.PathLike | None = None, map_location: str | torch.device = "cpu") -> Checkpoint:
        """Read a checkpoint directory (default: `latest()`). Tensors are loaded onto `map_location`."""
        directory = Path(path) if path is not None else self.latest()
        if directory is None:
            raise FileNotFoundError(f"no complete checkpoint under {self.directory}")
        if not _is_complete(directory):
            raise FileNotFoundError(f"{directory} is not a complete checkpoint directory")
        device = str(map_location)

        def torch_file(name: str, location: str | torch.device) -> Any:
            file = directory / name
            if not file.is_file():
                return None
            return load_torch_file(file, location)

        state = _read_json_object(directory / STATE_FILE)
        config = _read_json_object(directory / CONFIG_FILE) if (directory / CONFIG_FILE).is_file() else {}
        tensors = {
            file.name[: -len(TENSORS_SUFFIX)]: _read(file, lambda f: load_file(str(f), device=device))
            for file in sorted(directory.glob(f"*{TENSORS_SUFFIX}"))
        }
        return Checkpoint(
            path=directory,
            step=_step_of(directory) or 0,
            tensors=tensors,
            optimizer=torch_file(OPTIMIZER_FILE, map_location),
            state=state,
            config=config,
            rng=torch_file(RNG_FILE, "cpu"),
        )

    def load_latest(self, map_location: str | torch.device = "cpu") -> Checkpoint | None:
        """The latest complete checkpoint, or None when there is none (a fresh run)."""
        path = self.latest()
        return None if path is None else self.load(path, map_location=map_location)

    def load_newest_intact(
        self,
        map_location: str | torch.device = "cpu",
        check: Callable[[Checkpoint], None] | None = None,
    ) -> Checkpoint | None:
        """The newest checkpoint that reads back whole (`latest()` first, then by step) and passes `check` (which
        raises CheckpointError for a checkpoint that lacks something). Newer ones that fail are renamed to
        `damaged-step_*` with a warning naming them, never deleted. None when there is no checkpoint at all; a
        one-line CheckpointError, with nothing renamed, when none is intact.

        Under torch.distributed the main process decides and the other processes load the checkpoint it chose.
        """
        chosen, error = None, None
        if self.is_main_process:
            try:
                chosen = self._find_intact(map_location, check)
            except CheckpointError as err:
                error = str(err)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            decision = [chosen.path.name if chosen is not None else None, error]
            dist.broadcast_object_list(decision, src=0)
            name, error = decision
            if not self.is_main_process and name is not None:
                chosen = self.load(self.directory / name, map_location=map_location)
        if error is not None:
            raise CheckpointError(error)
        return chosen

    def _find_intact(
        self, map_location: str | torch.device, check: Callable[[Checkpoint], None] | None
    ) -> Checkpoint | None:
        latest = self.latest()
        if latest is None:
            return None
        candidates = [latest] + [path for path in reversed(self.checkpoints()) if path != latest]
        damaged: list[tuple[Path, str]] = []
        for path in candidates:
            try:
                checkpoint = self.load(path, map_location=map_location)
                if check is not None:
                    check(checkpoint)
            except CheckpointError as err:
                damaged.append((path, str(err)))
                continue
            for bad, reason in damaged:
                kept = self._set_aside(bad, DAMAGED_PREFIX)
                logger.warning("checkpoint %s is damaged: %s; kept as %s, not used", bad.name, reason, kept.name)
            if damaged:
                self._point_latest_to(path)
                logger.warning("resuming from %s, the newest intact checkpoint", path.name)
            return checkpoint
        listed = "; ".join(reason for _, reason in damaged[:3]) + (" …" if len(damaged) > 3 else "")
        raise CheckpointError(
            f"no intact checkpoint under {self.directory} ({listed}); move that folder away to start again"
        )
