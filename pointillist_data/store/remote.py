"""Remote stores: the HTTP(S) byte-range probe, and telling transport failures from corruption.

Sharded Zarr reads fetch byte ranges (the shard index, then inner chunks). A static HTTP
server that ignores ``Range`` (Python's ``http.server`` does) answers ``200`` with the whole
file, and the reader would decode the wrong bytes into checksum errors that look like a
corrupted store. Opening an ``http(s)://`` store therefore asks for one byte of its group
``zarr.json`` first (RFC 9110 section 14: a server that honours the range answers ``206``).

A read that fails in transport (connection refused or reset, a timeout, an HTTP status
other than 404, a truncated body) says nothing about the stored bytes: such failures are
raised as :class:`RemoteReadError`, never reported as a problem of the store.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import StoreError

__all__ = ["RemoteReadError", "RANGE_SERVER_HINT", "probe_http_range", "is_transport_error", "raise_if_transport"]

#: What to run instead of ``python -m http.server`` (a PyPI package; serves the current folder).
RANGE_SERVER_HINT = ("serve it with a Range-capable server, e.g. `pip install rangehttpserver && "
                     "python -m RangeHTTPServer 8000` in the folder holding the store, or read a local copy")


def is_remote(url: str | Path) -> bool:
    """True for a URL other than ``file://`` (``http(s)://``, ``s3://``, ``memory://`` ...)."""
    s = str(url)
    return "://" in s and not s.startswith("file://")


class RemoteReadError(StoreError):
    """Reading a remote store failed in transport, or its HTTP server cannot serve byte
    ranges; no verdict on the stored bytes (``pointillist validate`` exits 2, not 1)."""


def probe_http_range(url: str | Path, timeout: float = 30.0) -> None:
    """Ask an ``http(s)://`` store for byte 0 of its ``zarr.json``; other URLs are left alone.

    A 404 is left to the caller (no store there); the request goes without the environment's
    proxies, as fsspec's HTTP reads do.

    Raises:
        RemoteReadError: the server answers the range with the whole file (one line naming
            the URL and a Range-capable server to use instead), or cannot be reached, or
            answers an HTTP error other than 404.
    """
    url = str(url)
    if url.split("://", 1)[0].lower() not in ("http", "https"):
        return
    target = url.rstrip("/") + "/zarr.json"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(target, headers={"Range": "bytes=0-0"}), timeout=timeout) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return
        raise RemoteReadError(f"{url}: the server answered HTTP {e.code} ({e.reason}) for zarr.json; a server or "
                              "transport error, not a verdict on the store") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise RemoteReadError(f"{url}: cannot reach the server ({reason})") from None
    if status != 206:
        raise RemoteReadError(f"{url}: the HTTP server ignores Range requests (it answered {status} with the whole "
                              f"file to a one-byte request), so shard reads would be wrong; {RANGE_SERVER_HINT}")


def is_transport_error(e: BaseException) -> bool:
    """Whether ``e`` (or an exception it was raised from) is a failure to fetch bytes rather
    than a statement about them: a connection error, a timeout, an HTTP status other than
    404 or a truncated body (``aiohttp.ClientError``), a permission refusal. A missing
    object (``FileNotFoundError``) is a finding about the store, not a transport error."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, RemoteReadError):
            return True
        if isinstance(cur, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
            return False
        if isinstance(cur, (OSError, TimeoutError, asyncio.TimeoutError)):
            return True
        try:
            import aiohttp

            if isinstance(cur, aiohttp.ClientError):
                return True
        except ImportError:  # only the HTTP backend needs it
            pass
        cur = cur.__cause__ or cur.__context__
    return False


def raise_if_transport(e: BaseException, url: str | Path, what: str = "") -> None:
    """Raise :class:`RemoteReadError` for a transport failure ``e`` while reading the remote
    store ``url`` (``what``: the object being read); return for anything else."""
    if isinstance(e, RemoteReadError):
        raise e
    if not is_remote(url) or not is_transport_error(e):
        return
    reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise RemoteReadError(f"{url}: reading {what or 'the store'} failed in transport ({type(e).__name__}"
                          + (f": {reason}" if reason else "") + "); not a verdict on the store: try again") from e
