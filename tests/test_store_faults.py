"""Fault injection into store metadata and unchecked reads: every flipped byte of a
``zarr.json`` (group and arrays, token and supervision stores) is named by ``validate`` and by
reads; an unchecked read of a damaged object allocates no more than its chunk holds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from store_samples import SMALL, make_sample
from test_supervision import CFG
from test_supervision import make_sample as make_supervision_sample
from typer.testing import CliRunner

from pointillist_data.errors import PointillistError
from pointillist_data.store.supervision import SupervisionStore, check_supervision_store
from pointillist_data.store.supervision_write import SupervisionStoreConfig, SupervisionStoreWriter
from pointillist_data.store.token_store import MetadataError, TokenStore, check_token_store
from pointillist_data.store.write import StoreConfig, TokenStoreWriter


@pytest.fixture(scope="module")
def token_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "ds.zarr"
    samples = [make_sample(i, n) for i, n in enumerate([300, 5000, 40, 2600])]
    TokenStoreWriter.create(path, StoreConfig(**SMALL)).append(samples[:2])
    TokenStoreWriter.open(path).append(samples[2:])
    return path, samples


@pytest.fixture(scope="module")
def supervision_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults") / "sup.zarr"
    samples = [make_supervision_sample("017", 3, 5, 0), make_supervision_sample("018", 2, 4, 1)]
    SupervisionStoreWriter.create(path, SupervisionStoreConfig(**CFG)).append(samples[:1])
    SupervisionStoreWriter.open(path).append(samples[1:])
    return path, samples


def flips(n: int):
    """Positions and masks: bytes spread over the file with all bits flipped (never UTF-8
    text), and single-bit flips in between (mostly valid JSON with one changed value)."""
    for pos in range(0, n, max(1, n // 7)):
        yield pos, 0xFF
    for pos in range(5, n, max(1, n // 5)):
        yield pos, 0x01


def metadata_files(path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("zarr.json"))


def same_token_samples(st: TokenStore, samples) -> None:
    for i, s in enumerate(samples):
        got = st[i]
        for k in ("tokens", "points", "binding", "rgb", "opacity", "scale", "rotation", "flame_shape", "image"):
            np.testing.assert_array_equal(got[k], getattr(s, k))
        assert got["subject_id"] == s.subject_id


def same_supervision_samples(st: SupervisionStore, samples) -> None:
    for i, s in enumerate(samples):
        got = st[i]
        assert got.subject_id == s.subject_id
        for k in ("rgb", "mask", "intrinsics", "world_to_cam", "crops", "crop_source"):
            np.testing.assert_array_equal(getattr(got, k), getattr(s, k))
        np.testing.assert_array_equal(got.params.expr, s.params.expr.astype(np.float32))


@pytest.mark.parametrize("kind", ["tokens", "supervision"])
def test_a_flipped_byte_in_any_zarr_json_is_named(kind, token_store, supervision_store):
    path, samples = token_store if kind == "tokens" else supervision_store
    check, reader, same = ((check_token_store, TokenStore, same_token_samples) if kind == "tokens" else
                           (check_supervision_store, SupervisionStore, same_supervision_samples))
    tried = 0
    for meta in metadata_files(path):
        f = path / meta
        raw = f.read_bytes()
        try:
            for pos, mask in flips(len(raw)):
                data = bytearray(raw)
                data[pos] ^= mask
                f.write_bytes(bytes(data))
                tried += 1
                where = (meta, pos, mask, bytes(data[max(0, pos - 12):pos + 12]))
                problems = [str(p) for p in check(path)["problems"]]
                # a change of a shape's digits that keeps every committed row is no damage
                shape_only = _shape_only(raw, bytes(data))
                assert problems or shape_only, where
                assert shape_only or any("zarr.json" in p for p in problems), (where, problems)
                for verify in (True, False):
                    try:
                        st = reader.open(path, verify=verify)
                        same(st, samples)  # read whole: only an unread field (consolidated metadata) or a shape
                        assert shape_only or meta == "zarr.json" or not verify, (where, "read despite damage")
                    except MetadataError as e:
                        assert "zarr.json" in str(e), (where, e)
                    except PointillistError as e:  # unchecked: wrong values, or objects the metadata does not fit
                        assert not verify, (where, e)
        finally:
            f.write_bytes(raw)
    assert tried > 120 and not check(path)["problems"]


def _shape_only(a: bytes, b: bytes) -> bool:
    import json

    try:
        ma, mb = json.loads(a), json.loads(b)
    except ValueError:
        return False
    if "shape" not in ma or "shape" not in mb:
        return False
    ma.pop("shape"), mb.pop("shape")
    return ma == mb and json.loads(a)["shape"][0] <= json.loads(b)["shape"][0]


def test_validate_reports_damaged_metadata_without_a_traceback(token_store, tmp_path):
    import shutil

    from pipelines.cli import app

    src, _ = token_store
    for meta, want in (("subject_id/zarr.json", "subject_id/zarr.json: array metadata unreadable"),
                       ("tokens/zarr.json", "tokens/zarr.json: array metadata unreadable"),
                       ("offsets/zarr.json", "offsets/zarr.json: array metadata unreadable"),
                       ("zarr.json", "group: zarr.json: group metadata unreadable")):
        p = tmp_path / meta.replace("/", "_")
        shutil.copytree(src, p)
        data = bytearray((p / meta).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (p / meta).write_bytes(bytes(data))
        r = CliRunner().invoke(app, ["validate", str(p)])
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert want in r.output, r.output
        if meta != "zarr.json":  # every sample is named (the ids come from the manifest when unreadable)
            assert "samples affected: 0-3 (000, 001, 002, 003)" in r.output, r.output
        with pytest.raises(MetadataError, match="zarr.json"):
            st = TokenStore.open(p)
            for i in range(len(st)):
                st[i]


UNCHECKED = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from pointillist_data.store.token_store import TokenStore, ShardChecksumError
    path, key = sys.argv[1], sys.argv[2]
    st = TokenStore.open(path, verify=False)
    st[0]
    vm = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + (768 << 20), vm + (768 << 20)))
    out = []
    raw = open(f"{path}/{key}", "rb").read()
    for pos in [int(x) for x in sys.argv[3].split(",")]:
        data = bytearray(raw)
        data[pos] ^= 0xFF
        open(f"{path}/{key}", "wb").write(bytes(data))
        try:
            st = TokenStore.open(path, verify=False)
            for i in range(len(st)):
                st[i]
            st.read_all_tokens()
            out.append([pos, "read", ""])
        except ShardChecksumError as e:
            chain, c = [], e
            while c is not None:
                chain.append(type(c).__name__)
                c = c.__cause__ or c.__context__
            out.append([pos, "named", str(e), chain])
        except BaseException as e:
            out.append([pos, type(e).__name__, str(e)[:200]])
    open(f"{path}/{key}", "wb").write(raw)
    print(json.dumps(out))
""")


def test_unchecked_reads_are_bounded_by_the_arrays_shape(token_store, tmp_path):
    """verify=False: a flipped byte in the item count of a variable-length chunk asked for 4.3e9
    objects (31.9 GiB), one in a Blosc header for up to 2 GiB; under an address-space limit of
    768 MiB above the reader's, every damaged object must read or raise ShardChecksumError
    naming it, with no MemoryError on the way."""
    import shutil

    path = tmp_path / "ds.zarr"
    shutil.copytree(token_store[0], path)
    script = tmp_path / "unchecked.py"
    script.write_text(UNCHECKED)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    header = ",".join(str(i) for i in range(4, 24))  # the vlen item count, the Blosc header
    for key, positions in (("subject_id/c/0", header), ("point_count/c/0", header), ("offsets/c/0", "5,6"),
                           ("flame_shape/c/0/0", "5,6,14"), ("image/c/1/0/0/0", "5,6")):
        r = subprocess.run([sys.executable, str(script), str(path), key, positions], capture_output=True, text=True,
                           env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        import json

        for pos, outcome, text, *chain in json.loads(r.stdout.splitlines()[-1]):
            assert outcome in ("named", "read"), (key, pos, outcome, text)
            if outcome == "named":
                assert key in text, (key, pos, text)
                assert "MemoryError" not in chain[0], (key, pos, chain)
    # the tokens shard: its index and the Blosc header of an inner chunk
    r = subprocess.run([sys.executable, str(script), str(path), "tokens/c/0", ",".join(
        str(p) for p in (5, 6, (path / "tokens/c/0").stat().st_size - 20, (path / "tokens/c/0").stat().st_size - 9))],
        capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for pos, outcome, text, *chain in json.loads(r.stdout.splitlines()[-1]):
        assert outcome == "named" and "tokens/c/0" in text and "MemoryError" not in chain[0], (pos, outcome, text)
