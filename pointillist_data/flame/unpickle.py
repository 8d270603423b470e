"""A restricted unpickler for FLAME model files, without chumpy.

FLAME 2020 / 2023 ``.pkl`` files were written under Python 2 with chumpy arrays
(``chumpy.ch.Ch``) and a ``scipy.sparse.csc_matrix`` joint regressor. chumpy does
not run on Python 3.11 / NumPy 2, and a pickle is code: unpickling an arbitrary
file can run anything. :class:`RestrictedUnpickler` therefore resolves only

* NumPy's array reconstruction helpers and dtypes,
* chumpy classes, mapped to :class:`ChumpySurrogate` (state ``x`` becomes an array),
* scipy sparse matrices, mapped to :class:`SparseSurrogate` (densified, never imported),
* ``copyreg._reconstructor`` restricted to those surrogates,

and raises :class:`UnsafePickleError` for every other global.
"""

from __future__ import annotations

import codecs
import copyreg
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PointillistError

__all__ = ["UnsafePickleError", "RestrictedUnpickler", "load_restricted_pickle", "to_plain"]


class UnsafePickleError(PointillistError, pickle.UnpicklingError):
    """A pickle referenced a global outside the allow-list."""


class ChumpySurrogate:
    """Stand-in for any chumpy class; keeps the pickled state dict."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._state: Any = None

    def __setstate__(self, state: Any) -> None:
        self._state = state

    def to_array(self) -> np.ndarray:
        state = self._state
        if isinstance(state, dict) and "x" in state:
            return np.asarray(to_plain(state["x"]))
        raise pickle.UnpicklingError("chumpy object without an 'x' array in its state")


class SparseSurrogate:
    """Stand-in for ``scipy.sparse`` CSC/CSR/COO matrices; densified on conversion."""

    kind = "csc"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._state: Any = None

    def __setstate__(self, state: Any) -> None:
        self._state = state

    def to_array(self) -> np.ndarray:
        s = self._state
        if not isinstance(s, dict):
            raise pickle.UnpicklingError("sparse matrix without a state dict")
        shape = tuple(int(v) for v in (s.get("_shape") or s.get("shape")))
        out = np.zeros(shape, dtype=np.float64)
        if "indptr" in s:
            data, indices, indptr = (np.asarray(s[k]) for k in ("data", "indices", "indptr"))
            # CSC compresses columns, CSR compresses rows.
            major = shape[1] if self.kind == "csc" else shape[0]
            if len(indptr) != major + 1:
                raise pickle.UnpicklingError("sparse matrix with inconsistent indptr")
            for j in range(major):
                sl = slice(indptr[j], indptr[j + 1])
                if self.kind == "csc":
                    out[indices[sl], j] = data[sl]
                else:
                    out[j, indices[sl]] = data[sl]
        elif "row" in s or "coords" in s:
            rows, cols = s["coords"] if "coords" in s else (s["row"], s["col"])
            np.add.at(out, (np.asarray(rows), np.asarray(cols)), np.asarray(s["data"]))
        else:
            raise pickle.UnpicklingError("unsupported sparse matrix state")
        return out


class _CsrSurrogate(SparseSurrogate):
    kind = "csr"


_SAFE_SURROGATES = (ChumpySurrogate, SparseSurrogate)


def _restricted_reconstructor(cls: Any, base: Any, state: Any) -> Any:
    if isinstance(cls, type) and issubclass(cls, _SAFE_SURROGATES):
        return cls()
    if cls is np.ndarray:
        return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]
    raise UnsafePickleError(f"copyreg._reconstructor called with disallowed class {cls!r}")


_NUMPY_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
}


_SAFE_BUILTINS = {"object": object, "set": set, "frozenset": frozenset, "bytearray": bytearray}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that allows NumPy arrays and maps chumpy / scipy.sparse to surrogates.

    Any other global (``os.system``, ``builtins.eval``, arbitrary classes) raises
    :class:`UnsafePickleError` naming the module and attribute.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_ALLOWED:
            return getattr(__import__(module, fromlist=[name]), name)
        if module.split(".")[0] == "chumpy":
            return ChumpySurrogate
        if module.startswith("scipy.sparse"):
            if "csr" in name:
                return _CsrSurrogate
            if name.endswith(("csc_matrix", "csc_array", "coo_matrix", "coo_array")):
                return SparseSurrogate
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            return _restricted_reconstructor
        if module in ("__builtin__", "builtins") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if (module, name) == ("_codecs", "encode"):  # Python 3 protocol <= 2 pickles of bytes
            return codecs.encode
        raise UnsafePickleError(f"refusing to load global '{module}.{name}' from a pickle")


def to_plain(obj: Any) -> Any:
    """Recursively convert surrogates to NumPy arrays; dicts, lists and tuples are walked."""
    if isinstance(obj, _SAFE_SURROGATES):
        return obj.to_array()
    if isinstance(obj, dict):
        return {(k.decode() if isinstance(k, bytes) else k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def load_restricted_pickle(path: str | Path) -> Any:
    """Load a (Python 2 or 3) pickle through :class:`RestrictedUnpickler`.

    Args:
        path: the ``.pkl`` file.

    Returns:
        The unpickled object with every chumpy / sparse surrogate converted to ``np.ndarray``.

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafePickleError: the pickle references a disallowed global (the message names it
            and the file).
        pickle.UnpicklingError: the file is not a readable pickle.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except UnsafePickleError as e:
        raise UnsafePickleError(f"{path}: {e}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as e:
        raise pickle.UnpicklingError(f"{path}: not a readable pickle ({e})") from e
    return to_plain(obj)
