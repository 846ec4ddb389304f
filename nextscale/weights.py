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
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from nextscale.errors import UsageError


class CheckpointError(UsageError):
    """A weights or config file that cannot be loaded, with the reason (the CLI prints it as one line)."""


def _more(items: list, shown: int = 10) -> str:
    return f" … and {len(items) - shown} more" if len(items) > shown else ""


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_PROTOCOL = 0x80  # the first byte of a pickle of protocol ≥ 2 (torch.save's legacy format)


def load_torch_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """What `torch.save` wrote to `path`, read with torch.load(weights_only=True): tensors, numbers, strings and
    containers of them, never objects whose loading would run code. Anything else raises a one-line CheckpointError
    that says what was refused and why (FileNotFoundError when there is no file).

    The file is untrusted input to a parser: every failure of that parser (torch raises IndexError, KeyError or its
    own errors for random bytes) means the file is damaged or not a checkpoint, not a bug of the caller."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    with open(path, "rb") as file:
        head = file.read(4)
    if head != _ZIP_MAGIC and head[:1] != bytes([_PICKLE_PROTOCOL]):
        size = path.stat().st_size
        raise CheckpointError(f"{path} could not be read as a PyTorch checkpoint ({size} bytes, not from torch.save)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None and "Unsupported" not in str(err):
            # no class or function reference stopped the unpickler: the bytes are simply damaged
            raise CheckpointError(f"{path} is damaged: it could not be read as a PyTorch checkpoint") from None
        what = f" (it references {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} is not a plain weights file{what}, so it was not loaded: only tensors and plain values are read, "
            "and loading this one would run code from the file"
        ) from None
    except Exception as err:  # noqa: BLE001 - see the docstring: any parser failure means a damaged file
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path} is damaged: it could not be read as a PyTorch checkpoint ({reason})") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A `.pth`/`.pt` state dict (see `load_torch_file`); the official trainer's nested checkpoints are unwrapped.
    Raises FileNotFoundError or CheckpointError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    obj = load_torch_file(path)
    # the official trainer's checkpoints nest the state dicts
    if isinstance(obj, dict) and isinstance(obj.get("trainer"), dict):
        trainer = obj["trainer"]
        obj = trainer.get("var_wo_ddp", trainer.get("vae_local", obj))
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__
        raise CheckpointError(f"{path} does not hold a state dict (a mapping of names to tensors), but a {kind}")
    return obj


def require_finite(state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse weights holding NaN or infinity: they load without complaint and only fail later, while sampling."""
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise CheckpointError(f"{what} hold non-finite values (NaN or infinity) in {', '.join(bad[:5])}{_more(bad, 5)}")


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
