"""This library's own model format: a directory with safetensors weights and JSON configs.

    model_dir/
      nextscale.json              format version, class names, anything the caller adds
      tokenizer/config.json       TokenizerConfig (it owns the token space)
      tokenizer/model.safetensors
      transformer/config.json     {"architecture": "var", "config": VARConfig, "token_space": the tokenizer's}
      transformer/model.safetensors

Either part may be missing (a tokenizer alone is a valid directory). Loading is strict, and a transformer is only
paired with a tokenizer of the token space it records. Every file is checked as it is read: a missing, empty,
truncated or hand-broken file gives one line naming it. Format 1 (the token-space fields inside the transformer's
config) is still read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from nextscale.config_io import config_from_dict, config_to_dict
from nextscale.errors import UsageError
from nextscale.model.config import VARConfig
from nextscale.model.raster import RasterConfig, RasterTransformer
from nextscale.model.var import VAR
from nextscale.quantization import QUANTIZATIONS
from nextscale.sampling_settings import SamplingSettings
from nextscale.token_space import TokenSpace, require_same_token_space
from nextscale.tokenizer.tokenizer import Tokenizer, TokenizerConfig
from nextscale.weights import CheckpointError, load_strict, read_safetensors, require_finite, write_safetensors

FORMAT_VERSION = 2
# models that ship inside the package, by name: from_pretrained("fmnist"), nextscale sample --model fmnist; fmnist-tiny
# (1.31M parameters, on the same tokenizer) is fmnist's refiner for collaborative decoding: --refiner fmnist-tiny
SHIPPED_MODELS = {"fmnist": "assets/fmnist", "fmnist-tiny": "assets/fmnist-tiny"}
META_FILE = "nextscale.json"
SAMPLING_KEY = "sampling"  # nextscale.json: the model's default SamplingSettings
FAST_KEY = "fast"  # nextscale.json: the model's measured fast recipe (see `recorded_fast`)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
# transformer architectures by the name recorded in transformer/config.json: (module class, config class)
TRANSFORMERS: dict[str, tuple[type, type]] = {"var": (VAR, VARConfig), "raster": (RasterTransformer, RasterConfig)}
_TOKEN_SPACE_FIELDS = ("vocab_size", "latent_channels", "patch_nums")


def read_json(file: Path) -> dict:
    """A JSON object from `file`; a missing, empty or malformed file raises an error naming it."""
    if not file.is_file():
        raise FileNotFoundError(f"file missing: {file}")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{file} is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{file} must hold a JSON object, not a {type(data).__name__}")
    return data


def _config(config_class: type, data: dict, source: Path):
    try:
        return config_from_dict(config_class, data, str(source))
    except ValueError as err:
        raise CheckpointError(str(err)) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_part(module: Tokenizer | torch.nn.Module, directory: str | os.PathLike) -> None:
    """Weights and config of a tokenizer or a transformer into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    write_safetensors(state, directory / WEIGHTS_FILE)
    if isinstance(module, Tokenizer):
        config = config_to_dict(module.config)
    else:
        architecture = next(name for name, (cls, _) in TRANSFORMERS.items() if isinstance(module, cls))
        config = {
            "architecture": architecture,
            "config": config_to_dict(module.config),
            "token_space": module.token_space.to_dict(),
        }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")


def _load_weights(module: torch.nn.Module, directory: Path, what: str, device) -> None:
    state = read_safetensors(directory / WEIGHTS_FILE)
    require_finite(state, f"the {what} weights in {directory / WEIGHTS_FILE}")
    load_strict(module, state, f"{what} weights in {directory}")
    module.to(device).eval()


def load_tokenizer(directory: str | os.PathLike, device: str | torch.device = "cpu") -> Tokenizer:
    directory = Path(directory)
    config = _config(TokenizerConfig, read_json(directory / CONFIG_FILE), directory / CONFIG_FILE)
    tokenizer = Tokenizer(config)
    _load_weights(tokenizer, directory, "tokenizer", device)
    return tokenizer


def load_transformer(
    directory: str | os.PathLike, device: str | torch.device = "cpu", token_space: TokenSpace | None = None
) -> torch.nn.Module:
    """The transformer of `directory`, checked against `token_space` (the tokenizer's) when given."""
    directory = Path(directory)
    file = directory / CONFIG_FILE
    data = read_json(file)
    if "architecture" not in data:  # format 1: a flat VARConfig holding the token space
        data = {
            "architecture": "var",
            "config": {k: v for k, v in data.items() if k not in _TOKEN_SPACE_FIELDS},
            "token_space": {k: data[k] for k in _TOKEN_SPACE_FIELDS if k in data},
        }
    unknown = sorted(set(data) - {"architecture", "config", "token_space"})
    if unknown:
        raise CheckpointError(f"{file}: unknown entries {', '.join(unknown)}")
    architecture = data["architecture"]
    if architecture not in TRANSFORMERS:
        raise CheckpointError(f"{file}: unknown architecture {architecture!r}; known: {', '.join(TRANSFORMERS)}")
    module_class, config_class = TRANSFORMERS[architecture]
    config = _config(config_class, data.get("config", {}), file)
    try:
        recorded = TokenSpace.from_dict(data["token_space"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{file}: bad or missing token_space ({err})") from None
    if token_space is not None:
        require_same_token_space(token_space, recorded)
    model = module_class(config, recorded)
    _load_weights(model, directory, "transformer", device)
    return model


def save_pretrained(
    directory: str | os.PathLike,
    tokenizer: Tokenizer | None = None,
    model: torch.nn.Module | None = None,
    metadata: dict | None = None,
) -> Path:
    """Write the directory atomically: into a temporary sibling first, then renamed into place. Files and folders
    get the user's usual permissions (umask), not the private ones of a temporary directory."""
    directory = Path(directory)
    if tokenizer is not None and model is not None:
        require_same_token_space(tokenizer.token_space, model.token_space)
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_staging(directory)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        if tokenizer is not None:
            save_part(tokenizer, staging / "tokenizer")
        if model is not None:
            save_part(model, staging / "transformer")
        meta = {**(metadata or {}), "format_version": FORMAT_VERSION}
        (staging / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        mask = _umask()
        for path in [staging, *staging.rglob("*")]:
            path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)
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


def remove_staging(directory: str | os.PathLike) -> list[Path]:
    """Delete what an interrupted `save_pretrained(directory)` left beside it: the hidden `.<name>.*` staging and
    `.<name>.old` folders (a partial export can be gigabytes). Saves of one directory are not concurrent, so any such
    folder is debris. Returns what was removed."""
    directory = Path(directory)
    if not directory.parent.is_dir():
        return []
    debris = [path for path in directory.parent.glob(f".{directory.name}.*") if path.is_dir()]
    for path in debris:
        shutil.rmtree(path, ignore_errors=True)
    return debris


def model_directory(path: str | os.PathLike) -> Path:
    """`path` when it is a model directory; for the output folder of a training run (`nextscale train-tokenizer
    --out`, `train --out`), the model exported into it, `<path>/model`."""
    path = Path(path)
    if (path / "tokenizer").is_dir() or (path / "transformer").is_dir():
        return path
    if (path / "model" / META_FILE).is_file():
        return path / "model"
    if (path / "checkpoints").is_dir():
        raise CheckpointError(
            f"{path} is a training run that has not exported its model yet ({path / 'model'} is missing): "
            "let it finish (rerun its command) or name a model directory"
        )
    return path


def read_metadata(directory: str | os.PathLike) -> dict:
    """`nextscale.json` of a model directory ({} when absent); refuses a format newer than this library reads."""
    file = resolve_model(directory) / META_FILE
    if not file.is_file():
        return {}
    meta = read_json(file)
    version = meta.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{file}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{file} is format {version}; this nextscale reads formats up to {FORMAT_VERSION} (upgrade nextscale)"
        )
    classes = meta.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise CheckpointError(f"{file}: classes must be a list of class names, got {json.dumps(classes)[:60]}")
    sampling = meta.get(SAMPLING_KEY)
    if sampling is not None:
        fields = set(SamplingSettings.__dataclass_fields__)
        if not isinstance(sampling, dict) or not set(sampling) <= fields:
            raise CheckpointError(f"{file}: {SAMPLING_KEY} must be an object of {sorted(fields)}, got {sampling!r:.80}")
        try:
            SamplingSettings(**sampling)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{file}: {SAMPLING_KEY}: {err}") from None
    fast = meta.get(FAST_KEY)
    if fast is not None:
        _check_fast(file, fast, sampling or {})
    return meta


def _check_fast(file: Path, fast, sampling: dict) -> None:
    if not isinstance(fast, dict) or not isinstance(fast.get("sampling", {}), dict):
        raise CheckpointError(f"{file}: {FAST_KEY} must be an object with a 'sampling' object, got {fast!r:.80}")
    if fast.get("quantize") not in (None, *QUANTIZATIONS):
        raise CheckpointError(f"{file}: {FAST_KEY}.quantize must be one of {QUANTIZATIONS} or null")
    try:
        SamplingSettings(**{**sampling, **fast.get("sampling", {})})
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{file}: {FAST_KEY}.sampling: {err}") from None


def recorded_sampling(directory: str | os.PathLike):
    """The sampling settings a model directory records as its default (`"sampling"` in nextscale.json, chosen when
    the model was evaluated), or None."""
    sampling = read_metadata(directory).get(SAMPLING_KEY)
    return SamplingSettings(**sampling) if sampling is not None else None


def recorded_fast(directory: str | os.PathLike) -> dict | None:
    """The fast recipe a model directory records (`"fast"` in nextscale.json, chosen from a measured speed–quality
    frontier: `nextscale.experiments.speed_quality.fast_recipe`), or None: {"sampling": SamplingSettings fields that
    change the model's default settings, "quantize": "int8" or None (applied on CPUs in fp32 only), and what was
    measured}."""
    return read_metadata(directory).get(FAST_KEY)


def resolve_model(name_or_directory: str | os.PathLike) -> Path:
    """A model directory, or the folder of a model shipped with the library (`SHIPPED_MODELS`)."""
    path = Path(name_or_directory)
    if not path.exists() and str(name_or_directory) in SHIPPED_MODELS:
        shipped = Path(__file__).resolve().parent / SHIPPED_MODELS[str(name_or_directory)]
        if not (shipped / META_FILE).is_file():
            raise FileNotFoundError(f"the shipped model {name_or_directory!r} is missing from this installation")
        return shipped
    return path


def from_pretrained(
    directory: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[Tokenizer | None, torch.nn.Module | None]:
    """(tokenizer, transformer) from a directory written by `save_pretrained`, or a shipped model's name
    ("fmnist"); a missing part is None."""
    directory = resolve_model(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model directory not found: {directory}")
    read_metadata(directory)
    tokenizer = load_tokenizer(directory / "tokenizer", device) if (directory / "tokenizer").is_dir() else None
    model = None
    if (directory / "transformer").is_dir():
        space = tokenizer.token_space if tokenizer is not None else None
        model = load_transformer(directory / "transformer", device, space)
    if tokenizer is None and model is None:
        raise CheckpointError(f"{directory} holds neither tokenizer/ nor transformer/")
    return tokenizer, model


def load_refiner(directory: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The transformer of a model directory (or shipped name) that is to draw the later scales of another model's
    samples (collaborative decoding): FileNotFoundError when the directory is missing, UsageError when it holds no
    transformer/."""
    if not resolve_model(directory).is_dir():
        raise FileNotFoundError(f"refiner model directory not found: {directory}")
    _, transformer = from_pretrained(directory, device)
    if transformer is None:
        raise UsageError(f"refiner {directory}: it holds no transformer/")
    return transformer
