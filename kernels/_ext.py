"""Lazy access to the optional compiled extension ``kernels._C``.

Nothing here runs at import time: ``kernels._C`` (and with it libtorch's pybind
bindings) is imported on the first call to ``load_ext`` or ``ext_available``, and the
ImportError is kept so callers can report why the fast path is off.

Scope and fallbacks:
    Every op in ``kernels`` has a PyTorch path, so a missing extension is never fatal. The
    first caller that falls back because of it triggers one ``warnings.warn`` per process
    (``warn_ext_fallback``) saying how to build it.
"""

import importlib
import threading
import types
import warnings

_BUILD_HINT = (
    'Build it with `pip install --no-build-isolation -e .` from the repository root '
    '(ALGOPERF_BUILD_EXT=0 skips it on purpose).'
)

_lock = threading.Lock()
_loaded = False
_module: types.ModuleType | None = None
_import_error: ImportError | None = None
_warned = False


def load_ext() -> types.ModuleType | None:
    """Imports ``kernels._C`` on first use.

    Returns:
        The extension module, or None when it is not built or fails to load; the error is
        kept and available from ``ext_import_error()``.
    """
    global _loaded, _module, _import_error
    if _loaded:
        return _module
    with _lock:
        if not _loaded:
            try:
                _module = importlib.import_module('kernels._C')
            except ImportError as error:  # not built, or built against another torch
                _import_error = error
            _loaded = True
    return _module


def ext_available() -> bool:
    """Returns True when ``kernels._C`` imports (importing it on the first call)."""
    return load_ext() is not None


def ext_import_error() -> ImportError | None:
    """Returns the ImportError from loading ``kernels._C``, or None if it loaded or was not tried."""
    return _import_error


def warn_ext_fallback(op_name: str) -> None:
    """Warns, once per process, that ``op_name`` falls back because the extension is missing.

    Args:
        op_name: The op taking the fallback, named in the message.
    """
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        f'kernels._C is not available ({_import_error}); {op_name} and the other kernels ops '
        f'fall back to slower PyTorch implementations. {_BUILD_HINT}',
        RuntimeWarning,
        stacklevel=3,
    )
