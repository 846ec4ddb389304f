"""Reading weights files safely, with errors that say what is wrong: shared by this library's own format
(`pretrained.py`) and the official converter (`convert.py`), so neither depends on the other.

`.pth`/`.pt` files are read with `torch.load(weights_only=True)`: a pickle that would need to run code is refused,
never executed. `load_strict` loads a state dict into a module and lists every missing, unexpected or mis-shaped
tensor in one message.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn


class CheckpointError(ValueError):
    """A weights or config file that cannot be loaded, with the reason (the CLI prints it as one line)."""


def _more(items: list) -> str:
    return f" … and {len(items) - 10} more" if len(items) > 10 else ""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A `.pth`/`.pt` state dict, read with torch.load(weights_only=True); the official trainer's nested checkpoints
    are unwrapped. Raises FileNotFoundError or CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None and "Unsupported class" not in str(err):
            # no class or function reference stopped the unpickler: the bytes are simply not a checkpoint
            raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint (damaged or not one)") from None
        what = f" (it references {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} is not a plain weights file{what}, so it was not loaded: only state dicts of tensors are read, "
            "and loading this one would run code from the file"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint: {reason}") from None
    # the official trainer's checkpoints nest the state dicts
    if isinstance(obj, dict) and isinstance(obj.get("trainer"), dict):
        trainer = obj["trainer"]
        obj = trainer.get("var_wo_ddp", trainer.get("vae_local", obj))
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors), but a {kind}")
    return obj


def read_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A `.safetensors` file; a missing, empty, truncated or corrupt file raises an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file missing: {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({reason})") from None


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """safetensors' save_file, with the file given the user's usual permissions (the library writes it 0600)."""
    path = Path(path)
    save_file(tensors, str(path), metadata=metadata)
    mask = os.umask(0)
    os.umask(mask)
    path.chmod(0o666 & ~mask)
    return path


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """load_state_dict(strict=True) with one readable error listing missing, unexpected and mis-shaped tensors."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:10])}{_more(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:10])}{_more(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {'; '.join(shapes[:10])}{_more(shapes)}")
    if problems:
        raise CheckpointError(f"{what} does not fit: " + " | ".join(problems))
    module.load_state_dict(state, strict=True, assign=any(p.is_meta for p in module.parameters()))
