"""Loads the robustvit custom ops into PyTorch: ``torch.ops.robustvit.*``.

Build the library with ``make pylib`` (it prints the path, by default ``target/debug/librobustvit_ops.so``;
``make cuda`` builds one with CUDA kernels in ``target/cuda/debug``), then::

    import robustvit_ops
    robustvit_ops.load()          # or torch.ops.load_library(path)
    rel = torch.ops.robustvit.gae_relevance(attn_list, grad_list, 0)
"""
import os
from pathlib import Path

import torch

_REPO = Path(__file__).resolve().parents[2]
DEFAULT_LIBRARY = _REPO / "target" / "debug" / "librobustvit_ops.so"


def library_path() -> Path:
    """The library to load: $ROBUSTVIT_OPS_LIB, else the default output of ``make pylib``."""
    return Path(os.environ.get("ROBUSTVIT_OPS_LIB", DEFAULT_LIBRARY))


def load(path=None) -> Path:
    """Registers the ops with torch (idempotent) and returns the library path."""
    lib = Path(path) if path is not None else library_path()
    if not lib.is_file():
        raise FileNotFoundError(f"robustvit ops library not found at {lib}: run `make pylib` first "
                                "or set ROBUSTVIT_OPS_LIB to the built librobustvit_ops.so")
    torch.ops.load_library(str(lib))
    return lib
