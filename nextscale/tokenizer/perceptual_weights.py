"""The perceptual loss's weights file, built from the two public sources LPIPS itself is made of.

- The VGG16 trunk: torchvision's ImageNet weights (`torchvision.models.vgg16(weights="IMAGENET1K_V1")`, the file
  vgg16-397923af.pth). Only `features.*` up to relu5_3 is kept (14.7M of its 138M values).
- The five linear layers `lin{k}.model.1.weight`, shape (1, C, 1, 1), fitted to human similarity judgements by the
  LPIPS authors and shipped inside the `lpips` PyPI package as `lpips/weights/v0.1/vgg.pth`.

`write_perceptual_weights` joins them into one state dict that `PerceptualLoss` reads (about 59 MB). Each source can
be a local file; without one, the VGG16 weights are downloaded by torchvision (into torch's hub cache) and the linear
layers are read from the installed `lpips` package. Every failure is one line naming the file or the missing package.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
from pathlib import Path

import torch
from torch import nn

from nextscale.errors import UsageError
from nextscale.tokenizer.losses import LPIPS_WIDTHS, vgg16_feature_shapes
from nextscale.weights import read_state_dict

LPIPS_LINEAR_LAYERS = Path("weights") / "v0.1" / "vgg.pth"  # inside the lpips package


def write_perceptual_weights(
    out_path: str | os.PathLike,
    vgg_weights: str | os.PathLike | nn.Module | dict[str, torch.Tensor] | None = None,
    lpips_weights: str | os.PathLike | None = None,
) -> Path:
    """Write the perceptual-loss weights file to `out_path` (atomically) and return its path.

    `vgg_weights`: a torchvision VGG16 state dict (a file such as vgg16-397923af.pth, or the dict) or the model
    itself; None downloads torchvision's ImageNet weights. `lpips_weights`: the LPIPS linear-layer file
    (lpips/weights/v0.1/vgg.pth); None takes it from the installed `lpips` package.
    Raises FileNotFoundError, ValueError or CheckpointError with one line naming the culprit."""
    out = Path(out_path)
    if out.is_dir():
        raise UsageError(
            f"{out} is a directory: give the path of the weights file to write, e.g. {out / 'lpips_vgg.pth'}"
        )
    state = {**_vgg_features(vgg_weights), **_lpips_linear_layers(lpips_weights)}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"cannot write {out}: {out.parent} is not a directory") from None
    temporary = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


def _vgg_features(source: str | os.PathLike | nn.Module | dict | None) -> dict[str, torch.Tensor]:
    """`features.*` of VGG16 up to relu5_3, as fp32 CPU tensors, checked against the VGG16 layout."""
    if source is None:
        what, state = "torchvision's VGG16 ImageNet weights", _download_vgg16()
    elif isinstance(source, nn.Module):
        what, state = f"the {type(source).__name__} model", source.state_dict()
    elif isinstance(source, dict):
        what, state = "the VGG16 state dict", source
    else:
        what, state = str(source), read_state_dict(source)
    shapes = vgg16_feature_shapes()
    missing = [key for key in shapes if key not in state]
    if missing:
        raise UsageError(f"{what} is not a torchvision VGG16 state dict (no {', '.join(missing[:3])} …)")
    wrong = [f"{key} {tuple(state[key].shape)}" for key, shape in shapes.items() if tuple(state[key].shape) != shape]
    if wrong:
        raise UsageError(f"{what} does not have VGG16's shapes: {', '.join(wrong[:3])}")
    return {key: state[key].detach().to("cpu", torch.float32).clone() for key in shapes}


def _download_vgg16() -> dict[str, torch.Tensor]:
    try:
        from torchvision.models import VGG16_Weights, vgg16  # optional: torchvision
    except ImportError:
        raise UsageError(
            "torchvision is needed to download VGG16 (pip install torchvision), or pass a local vgg16 state dict"
        ) from None
    try:
        return vgg16(weights=VGG16_Weights.IMAGENET1K_V1).state_dict()
    except OSError as err:  # urllib's URLError is an OSError
        raise UsageError(
            f"could not download torchvision's VGG16 weights ({err}); fetch vgg16-397923af.pth from "
            f"{VGG16_Weights.IMAGENET1K_V1.url} and pass its path"
        ) from None


def _lpips_linear_layers(source: str | os.PathLike | None) -> dict[str, torch.Tensor]:
    """`lin{k}.model.1.weight`, k = 0..4, each (1, C_k, 1, 1) with C_k the VGG width at LPIPS's k-th tap."""
    path = _installed_lpips_file() if source is None else Path(source)
    state = read_state_dict(path)
    out = {}
    for k, width in enumerate(LPIPS_WIDTHS):
        key = f"lin{k}.model.1.weight"
        if key not in state:
            raise UsageError(f"{path} is not LPIPS's VGG linear-layer file (no {key}; use lpips/weights/v0.1/vgg.pth)")
        if tuple(state[key].shape) != (1, width, 1, 1):
            raise UsageError(
                f"{path}: {key} has shape {tuple(state[key].shape)}, not (1, {width}, 1, 1) (the VGG variant's)"
            )
        out[key] = state[key].detach().to("cpu", torch.float32).clone()
    return out


def _installed_lpips_file() -> Path:
    """The linear-layer file inside the installed `lpips` package (found without importing it)."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the LPIPS linear layers ship with the lpips package: pip install lpips, "
            "or pass the path of a copy of its weights/v0.1/vgg.pth"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / LPIPS_LINEAR_LAYERS
    if not path.is_file():
        raise FileNotFoundError(f"the installed lpips package has no {LPIPS_LINEAR_LAYERS} (looked for {path})")
    return path
