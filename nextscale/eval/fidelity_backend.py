"""The one door to torch-fidelity, the optional dependency that holds the metric math and the InceptionV3 network.

torch-fidelity imports torchvision, which the core library must not need, so it is imported here, on first use.
"""

from __future__ import annotations

from types import ModuleType

INSTALL_HINT = "pip install 'nextscale[eval]'"


def import_torch_fidelity() -> ModuleType:
    """The `torch_fidelity` package, or an ImportError that says how to install it."""
    try:
        import torch_fidelity
    except ImportError as err:  # torch-fidelity missing, or a torchvision that does not match torch
        raise ImportError(
            f"evaluation needs torch-fidelity and a torchvision matching torch ({err}); {INSTALL_HINT}"
        ) from err
    return torch_fidelity
