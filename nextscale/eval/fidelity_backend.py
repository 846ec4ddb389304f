"""The one door to torch-fidelity, the optional dependency that holds the metric math and the InceptionV3 network.

torch-fidelity imports torchvision, which the core library must not need, so it is imported here, on first use. A
torchvision built for another torch fails at import with a RuntimeError (`operator torchvision::nms does not exist`)
or an OSError (a missing CUDA library) rather than an ImportError; all three become one ImportError that says how to
install a working pair.
"""

from __future__ import annotations

from types import ModuleType

INSTALL_HINT = "pip install 'nextscale[eval]'"


def import_torch_fidelity() -> ModuleType:
    """The `torch_fidelity` package, or a one-line ImportError that says how to install it."""
    try:
        import torch_fidelity  # optional: the eval extra
    except (ImportError, OSError, RuntimeError) as err:  # missing, or a torchvision that does not match torch
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ImportError(
            f"evaluation needs torch-fidelity and a torchvision built for this torch ({reason}); {INSTALL_HINT}"
        ) from err
    return torch_fidelity
