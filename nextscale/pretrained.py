"""This library's own model format: a directory with safetensors weights and JSON configs.

    model_dir/
      nextscale.json              format version, class names, anything the caller adds
      tokenizer/config.json       TokenizerConfig
      tokenizer/model.safetensors
      transformer/config.json     VARConfig
      transformer/model.safetensors

Either part may be missing (a tokenizer alone is a valid directory). Loading is strict.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from nextscale.convert import CheckpointError, load_strict
from nextscale.model.config import VARConfig
from nextscale.model.var import VAR
from nextscale.tokenizer.tokenizer import Tokenizer, TokenizerConfig

FORMAT_VERSION = 1
META_FILE = "nextscale.json"
PARTS = {"tokenizer": (Tokenizer, TokenizerConfig), "transformer": (VAR, VARConfig)}


def _config_from_json(config_class, data: dict):
    known = set(config_class.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise CheckpointError(f"{config_class.__name__} does not know the fields {unknown}")
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def save_part(module: Tokenizer | VAR, directory: str | os.PathLike) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(module.config.to_dict(), indent=2) + "\n")


def load_part(kind: str, directory: str | os.PathLike, device: str | torch.device = "cpu"):
    module_class, config_class = PARTS[kind]
    directory = Path(directory)
    config_file, weights_file = directory / "config.json", directory / "model.safetensors"
    for file in (config_file, weights_file):
        if not file.is_file():
            raise FileNotFoundError(f"{kind} file missing: {file}")
    config = _config_from_json(config_class, json.loads(config_file.read_text()))
    module = module_class(config)
    load_strict(module, load_file(str(weights_file)), f"{kind} weights in {directory}")
    return module.to(device).eval()


def save_pretrained(
    directory: str | os.PathLike,
    tokenizer: Tokenizer | None = None,
    model: VAR | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write the directory atomically: into a temporary sibling first, then renamed into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        if tokenizer is not None:
            save_part(tokenizer, staging / "tokenizer")
        if model is not None:
            save_part(model, staging / "transformer")
        meta = {"format_version": FORMAT_VERSION, **(metadata or {})}
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
            staging.rename(directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def read_metadata(directory: str | os.PathLike) -> dict:
    file = Path(directory) / META_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def from_pretrained(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[Tokenizer | None, VAR | None]:
    """(tokenizer, transformer) from a directory written by `save_pretrained`; a missing part is None."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory not found: {directory}")
    parts = {kind: load_part(kind, directory / kind, device) for kind in PARTS if (directory / kind).is_dir()}
    if not parts:
        raise CheckpointError(f"{directory} holds neither tokenizer/ nor transformer/")
    return parts.get("tokenizer"), parts.get("transformer")
