"""Reader for the IDX format of MNIST and Fashion-MNIST (http://yann.lecun.com/exdb/mnist/, "file formats").

Layout: two zero bytes, a type code, the number of dimensions n, then n big-endian uint32 sizes, then the values in
big-endian row-major order. Files may be gzip-compressed.
"""

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from nextscale.errors import UsageError

# IDX type code -> big-endian numpy dtype
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}

_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(UsageError):
    """An IDX file whose header or length is not valid."""


def parse_idx(data: bytes, source: str = "<bytes>") -> torch.Tensor:
    """Decode uncompressed IDX bytes into a tensor of the stored dtype and shape; `source` names it in errors."""
    if len(data) < 4:
        raise IdxFormatError(f"{source}: {len(data)} bytes is too short for an IDX header")
    if data[0] != 0 or data[1] != 0:
        raise IdxFormatError(f"{source}: not an IDX file (magic number starts with {data[:2].hex()}, expected 0000)")
    type_code, num_dims = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise IdxFormatError(f"{source}: unknown IDX type code 0x{type_code:02x}")
    if num_dims == 0:
        raise IdxFormatError(f"{source}: IDX header declares 0 dimensions")
    header_bytes = 4 + 4 * num_dims
    if len(data) < header_bytes:
        raise IdxFormatError(f"{source}: truncated IDX header ({num_dims} dimensions need {header_bytes} bytes)")
    shape = struct.unpack(f">{num_dims}I", data[4:header_bytes])
    dtype = np.dtype(IDX_DTYPES[type_code])
    expected_bytes = math.prod(shape) * dtype.itemsize
    found_bytes = len(data) - header_bytes
    if found_bytes != expected_bytes:
        problem = "truncated" if found_bytes < expected_bytes else "has trailing bytes"
        raise IdxFormatError(
            f"{source}: IDX file {problem}: header shape {shape} needs {expected_bytes} data bytes, found {found_bytes}"
        )
    values = np.frombuffer(data, dtype=dtype, offset=header_bytes).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file, gzip-compressed (detected by its magic bytes) or not."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise IdxFormatError(f"{path}: corrupt or truncated gzip data ({error})") from None
    return parse_idx(data, source=str(path))
