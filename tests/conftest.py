"""Shared fixtures: the official-code parity fixtures and tiny random models.

Parity fixtures (see ../shared/parity/README.md) live in tests/assets, so every clone runs the whole parity suite.
`tiny_a` is stored as the official files; `tiny_b` and `tiny_e` store their transformer and io files as they are and
their tokenizer as the tensors that differ from tiny_a's (`*_vae_delta.pt`: tiny_b differs only in its φ convs), which
keeps the repository lean; the official `.pth` is rebuilt from it once per session and loaded through the same
`load_official` path. The official key tables (about 100 KB) are copied into tests/assets/keys.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import logging
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from nextscale.convert import load_official
from nextscale.model.config import var_preset
from nextscale.model.var import VAR
from nextscale.pretrained import save_pretrained
from nextscale.tokenizer.tokenizer import Tokenizer, tokenizer_preset

ASSETS = Path(__file__).resolve().parent / "assets"
SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_PARITY = SHARED / "parity"
KEY_TABLES = ASSETS / "keys"

PARITY_NAMES = ("tiny_a", "tiny_b", "tiny_e")


@pytest.fixture(autouse=True)
def reset_package_logger():
    """Training runs point the `nextscale` logger at their own handlers and stop propagation; undo that after each
    test so that later tests (and caplog) see the records as usual."""
    yield
    package_logger = logging.getLogger("nextscale")
    for handler in list(package_logger.handlers):
        package_logger.removeHandler(handler)
        handler.close()
    package_logger.propagate = True
    package_logger.setLevel(logging.NOTSET)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine every threaded op waits for a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rebuild_vae_from_delta(name: str, out_dir: Path) -> Path:
    """tests/assets/<name>_vae_delta.pt + tiny_a's tokenizer → the official <name>_vae.pth in `out_dir`."""
    delta = torch.load(ASSETS / f"{name}_vae_delta.pt", weights_only=True)
    base = torch.load(ASSETS / "tiny_a_vae.pth", weights_only=True)
    merged = {**{k: v for k, v in base.items() if k not in delta["removed"]}, **delta["changed"]}
    path = out_dir / f"{name}_vae.pth"
    torch.save({key: merged[key] for key in delta["order"]}, path)
    return path


@functools.cache
def parity_dir(name: str) -> Path | None:
    """Where a fixture's three files are: tests/assets (tokenizer rebuilt from its delta into a session folder),
    else ../shared/parity; None when neither has them."""
    parts = ("io.pt", "vae.pth", "var.pth")
    if all((ASSETS / f"{name}_{part}").is_file() for part in parts):
        return ASSETS
    if (ASSETS / f"{name}_vae_delta.pt").is_file() and (ASSETS / "tiny_a_vae.pth").is_file():
        folder = Path(tempfile.mkdtemp(prefix=f"nextscale-{name}-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        rebuild_vae_from_delta(name, folder)
        for part in ("io.pt", "var.pth"):
            (folder / f"{name}_{part}").symlink_to(ASSETS / f"{name}_{part}")
        return folder
    if all((SHARED_PARITY / f"{name}_{part}").is_file() for part in parts):
        return SHARED_PARITY
    return None


@dataclass
class ParityCase:
    name: str
    folder: Path
    io: dict
    tokenizer: Tokenizer
    model: VAR

    @property
    def vae_path(self) -> Path:
        return self.folder / f"{self.name}_vae.pth"

    @property
    def var_path(self) -> Path:
        return self.folder / f"{self.name}_var.pth"


@functools.cache
def load_parity_case(name: str) -> ParityCase:
    folder = parity_dir(name)
    if folder is None:
        pytest.skip(f"parity fixture {name} not found (looked in {ASSETS} and {SHARED_PARITY})")
    io = torch.load(folder / f"{name}_io.pt", weights_only=True)
    # the plain-attention fixture (tiny_b) has no scale_mul tensor to read the head count from
    tokenizer, model = load_official(
        folder / f"{name}_vae.pth", folder / f"{name}_var.pth", num_heads=io["config"]["var"]["num_heads"]
    )
    return ParityCase(name, folder, io, tokenizer, model)


@pytest.fixture(scope="session", params=PARITY_NAMES)
def parity(request) -> ParityCase:
    """Each parity fixture in turn: tokenizer and transformer loaded from the official files, eval mode."""
    return load_parity_case(request.param)


@pytest.fixture(scope="session")
def tiny_a() -> ParityCase:
    return load_parity_case("tiny_a")


@pytest.fixture(scope="session")
def tiny_e() -> ParityCase:
    return load_parity_case("tiny_e")


def perturb_(module: torch.nn.Module, std: float = 0.05, seed: int = 0) -> torch.nn.Module:
    """Add seeded N(0, std) noise to every parameter, as the fixtures do, so that the near-zero AdaLN gammas of a
    fresh model really let each block change its input (otherwise many invariants would hold trivially)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * std)
    return module


def debug_pair(seed: int = 0, *, tokenizer_overrides: dict | None = None, **var_overrides) -> tuple[Tokenizer, VAR]:
    """The `debug` presets (8×8 images, scales 1,2,3,4, V=64), seeded, transformer perturbed, both in eval mode."""
    torch.manual_seed(seed)
    tokenizer = Tokenizer(tokenizer_preset("debug", **(tokenizer_overrides or {}))).eval()
    model = perturb_(VAR(var_preset("debug", **var_overrides), tokenizer.token_space), seed=seed).eval()
    return tokenizer, model


def write_debug_tokenizer(directory: Path, seed: int = 0, **overrides) -> str:
    """A randomly initialised `debug` tokenizer (seeded; preset fields overridden by `overrides`) written in the
    save_pretrained format, as training a transformer reads it. Returns the directory."""
    torch.manual_seed(seed)
    return str(save_pretrained(directory, tokenizer=Tokenizer(tokenizer_preset("debug", **overrides))))


@pytest.fixture
def make_debug_pair():
    """debug_pair(seed, tokenizer_overrides=..., **var_overrides) as a fixture, for tests that vary the presets."""
    return debug_pair


@pytest.fixture
def debug_models() -> tuple[Tokenizer, VAR]:
    return debug_pair()


@pytest.fixture(scope="session")
def key_tables() -> Path:
    if not (KEY_TABLES / "vqvae_keys.tsv").is_file():
        pytest.skip(f"official key tables not found in {KEY_TABLES}")
    return KEY_TABLES


# ---- Fashion-MNIST files ------------------------------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array in the IDX format, independently of the reader under test."""
    type_codes = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C, np.dtype("float32"): 0x0D}
    header = bytes([0, 0, type_codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_fashion_files(folder: Path, prefix: str, images_NHW: np.ndarray, labels_N: np.ndarray) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images_NHW)))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels_N)))


DOCS = Path(__file__).resolve().parents[1] / "docs"


def load_docs_script(name: str):
    """docs/scripts/<name>.py as a module (the scripts that turn docs/data into the documents' tables)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, DOCS / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module
