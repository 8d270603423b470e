"""Remote stores over HTTP (issue 27 item 3): a server that ignores ``Range`` gets one line
naming the URL and a server to use instead; ``validate`` tells a transport failure from
corruption (an intact store is never called corrupt)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from http_range import RangeHandler
from store_samples import SMALL, make_sample
from typer.testing import CliRunner

from pipelines.cli import app
from pointillist_data.store.remote import RemoteReadError
from pointillist_data.store.token_store import StoreValidationError, TokenStore, validate_store
from pointillist_data.store.write import StoreConfig, TokenStoreWriter


class PlainHandler(SimpleHTTPRequestHandler):
    """Python's own static server, which answers ``Range`` requests with 200 and the whole file."""

    def log_message(self, *args) -> None:
        pass


class FlakyHandler(RangeHandler):
    """A Range-capable server whose first ``fails`` requests for one object fail with 503 (a
    proxy or CDN hiccup): a transport failure, the stored bytes are intact."""

    failing = "/ds.zarr/tokens/c/0"
    fails = 0
    failed = 0

    def send_head(self):
        if self.path.split("?")[0] == self.failing and type(self).failed < self.fails:
            type(self).failed += 1
            self.send_error(503, "try later")
            return None
        return super().send_head()


@contextlib.contextmanager
def _serve(folder, handler) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ds.zarr"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def store(tmp_path):
    samples = [make_sample(i, n) for i, n in enumerate([300, 5000])]
    TokenStoreWriter.create(tmp_path / "ds.zarr", StoreConfig(**SMALL)).append(samples)
    return tmp_path, samples


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line(r, code: int) -> str:
    err = r.output  # stdout and stderr, interleaved
    assert r.exit_code == code, (r.exit_code, r.output, r.stderr, r.exception)
    assert "Traceback" not in err
    # progress lines ("[  0.1 s] checksums ...") aside, the error is one line
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("[")]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "checksum" not in lines[0].lower() and "corrupt" not in lines[0].lower(), lines[0]
    return lines[0]


def test_python_http_server_gets_one_range_line(store):
    folder, samples = store
    with _serve(folder, PlainHandler) as url:
        with pytest.raises(RemoteReadError) as e:
            TokenStore.open(url)
        assert str(e.value).startswith(f"{url}: the HTTP server ignores Range requests")
        for cmd in (("validate", url), ("inspect", url, "--json")):
            line = _one_line(_cli(*cmd), 2)
            assert url in line and "ignores Range" in line and "python -m RangeHTTPServer" in line, line
    # the same folder behind a Range-capable server reads back exactly
    from http_range import serve

    with serve(folder) as base:
        st = TokenStore.open(f"{base}/ds.zarr")
        np.testing.assert_array_equal(st.tokens(1), samples[1].tokens)
        assert validate_store(f"{base}/ds.zarr")["samples"] == 2


@pytest.mark.parametrize("fails", [1, 10**6], ids=["one-hiccup", "down"])
def test_validate_tells_transport_errors_from_corruption(store, fails):
    folder, _ = store
    FlakyHandler.fails, FlakyHandler.failed = fails, 0
    with _serve(folder, FlakyHandler) as url:
        with pytest.raises(RemoteReadError, match="failed in transport .*not a verdict on the store"):
            validate_store(url)
        assert FlakyHandler.failed >= 1
        FlakyHandler.failed = 0
        line = _one_line(_cli("validate", url), 2)
        assert "transport" in line and "corrupt" not in line, line
    # real corruption over the same transport is still reported as a problem of the store (exit 1)
    shard = folder / "ds.zarr" / "tokens" / "c" / "0"
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    with _serve(folder, RangeHandler) as url:
        with pytest.raises(StoreValidationError, match="tokens/c/0: corrupted"):
            validate_store(url)
        r = _cli("validate", url)
        assert r.exit_code == 1 and "tokens/c/0: corrupted" in r.output, r.output
