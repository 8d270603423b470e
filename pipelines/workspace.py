"""Where stage outputs and records live: a local folder or any fsspec URL (s3://, gs://, ...).

Layout: ``<out>/work/<pid>/<stage>/<key>/`` holds a stage's outputs (``key`` = hash of its
inputs and config) and ``<out>/work/<pid>/<stage>/record.json`` its stage record. Locally a
stage writes into ``<key>.tmp-<uuid>`` renamed to ``<key>`` when done; for a remote URL it
writes into a local scratch folder that is uploaded before its record says complete, so an
interrupted stage never leaves a folder that looks finished.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import fsspec

__all__ = ["Workspace", "subject_key"]


def subject_key(pid: int | str) -> str:
    """The folder name and record id of a participant: ``017`` for NeRSemble's ids, the
    video's file stem for ``run --videos`` (:mod:`pipelines.stages_monocular`)."""
    return f"{pid:03d}" if isinstance(pid, int) else str(pid)


class Workspace:
    """Stage folders and records under ``<out>/work``.

    Args:
        out: local path or fsspec URL.
        scratch: local folder for remote downloads and staging (default: a temporary one).
    """

    def __init__(self, out: str, scratch: str | Path | None = None) -> None:
        self.url = out.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.remote = "://" in out and not out.startswith("file://")
        self.scratch = Path(scratch or tempfile.mkdtemp(prefix="pointillist-"))

    def portable(self, path: str | None) -> str | None:
        """``path`` relative to the run folder when it lies inside it (``store.zarr``), else
        unchanged: what a record in the folder keeps, so that a copy of the folder uses its
        own files (see :meth:`resolve`)."""
        if not path:
            return path
        if self.remote or "://" in path:
            return path[len(self.url) + 1:] if path.startswith(self.url + "/") else path
        try:
            rel = Path(path).resolve().relative_to(Path(self.root).resolve())
        except ValueError:
            return path
        return rel.as_posix() if rel.parts else "."

    def resolve(self, path: str | None, recorded_out: str | None = None) -> str | None:
        """A path read from a record of this folder, made usable where the folder is now: a
        relative one (:meth:`portable`) lies inside this folder; an absolute one inside the
        folder the record was written in (``recorded_out``, older records) is taken from this
        folder first. Other paths (outside the run, URLs) are returned unchanged."""
        if not path:
            return path
        here = self.url if self.remote else self.root
        if "://" not in path and not Path(path).is_absolute():
            return f"{here.rstrip('/')}/{path}" if path != "." else here
        if recorded_out and recorded_out.rstrip("/") != here.rstrip("/"):
            base = recorded_out.rstrip("/") + "/"
            if path.startswith(base):
                return f"{here.rstrip('/')}/{path[len(base):]}"
        return path

    def _p(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), "work", *parts])

    def stage_dir(self, pid: int, stage: str, key: str) -> str:
        return self._p(subject_key(pid), stage, key)

    def read_record(self, pid: int, stage: str) -> dict | None:
        return self.read_json(f"work/{subject_key(pid)}/{stage}/record.json")

    def write_record(self, pid: int, stage: str, record: dict) -> None:
        self.write_json(f"work/{subject_key(pid)}/{stage}/record.json", record)

    def read_json(self, rel: str) -> dict | None:
        """The JSON object at ``<out>/<rel>``, or ``None`` when absent or unreadable."""
        try:
            return json.loads(self.fs.cat_file(f"{self.root.rstrip('/')}/{rel}"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None

    def write_json(self, rel: str, obj: dict) -> None:
        """Write ``<out>/<rel>`` whole or not at all (temporary name, then a rename; one PUT remotely)."""
        p = f"{self.root.rstrip('/')}/{rel}"
        data = json.dumps(obj, indent=1, default=str).encode()
        if self.remote:
            self.fs.pipe_file(p, data)
            return
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{p}.tmp-{uuid.uuid4().hex}"
        Path(tmp).write_bytes(data)
        os.replace(tmp, p)

    def check_writable(self) -> None:
        """Create the output folder and write and delete a probe file in it.

        Raises:
            InputError: naming ``--out`` and the reason (read-only, not a folder, ...).
        """
        from pointillist_data.errors import InputError

        probe = f"{self.root.rstrip('/')}/.write-probe-{uuid.uuid4().hex}"
        try:
            if not self.remote:
                Path(self.root).mkdir(parents=True, exist_ok=True)
            self.fs.pipe_file(probe, b"")
            self.fs.rm(probe)
        except OSError as e:
            raise InputError(f"--out {self.url}", f"cannot write there ({e.strerror or e})",
                             "choose a writable folder or URL") from None

    def records(self) -> dict[str, dict[str, dict]]:
        """``{pid: {stage: record}}`` for everything under ``work/``."""
        out: dict[str, dict[str, dict]] = {}
        base = self._p()
        if not self.fs.exists(base):
            return out
        for path in self.fs.glob(f"{base}/*/*/record.json"):
            parts = path.rstrip("/").split("/")
            try:
                out.setdefault(parts[-3], {})[parts[-2]] = json.loads(self.fs.cat_file(path))
            except json.JSONDecodeError:
                continue
        return out

    def exists(self, pid: int, stage: str, key: str) -> bool:
        return self.fs.exists(self.stage_dir(pid, stage, key))

    def new_tmp(self, pid: int, stage: str, key: str) -> Path:
        """A fresh local folder for the stage to write into."""
        if self.remote:
            p = self.scratch / "staging" / subject_key(pid) / stage / f"{key}.tmp-{uuid.uuid4().hex}"
        else:
            p = Path(self.stage_dir(pid, stage, key) + f".tmp-{uuid.uuid4().hex}")
        p.mkdir(parents=True)
        return p

    def checkpoint_dir(self, pid: int, stage: str, key: str) -> Path:
        """The local folder of a stage's checkpoints (``<key>.checkpoint`` beside its output
        folder; in the scratch folder for a remote ``out``, so a resume needs the same
        scratch). The stage removes its checkpoint when it finishes."""
        if self.remote:
            return self.scratch / "checkpoints" / subject_key(pid) / stage / key
        return Path(self.stage_dir(pid, stage, key) + ".checkpoint")

    def publish(self, tmp: Path, pid: int, stage: str, key: str) -> Path:
        """Make ``tmp`` the stage's output folder; returns a local path holding the outputs."""
        final = self.stage_dir(pid, stage, key)
        if not self.remote:
            if Path(final).exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            self._clean_tmp(pid, stage)
            return Path(final)
        if self.fs.exists(final):
            self.fs.rm(final, recursive=True)
        self.fs.put(str(tmp) + "/", final, recursive=True)
        local = self.scratch / "cache" / subject_key(pid) / stage / key
        if local.exists():
            shutil.rmtree(local)
        local.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, local)
        return local

    def materialize(self, pid: int, stage: str, key: str) -> Path:
        """A local folder with a completed stage's outputs (downloaded when remote)."""
        if not self.remote:
            return Path(self.stage_dir(pid, stage, key))
        local = self.scratch / "cache" / subject_key(pid) / stage / key
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get(self.stage_dir(pid, stage, key) + "/", str(local), recursive=True)
        return local

    def _clean_tmp(self, pid: int, stage: str) -> None:
        parent = Path(self._p(subject_key(pid), stage))
        for p in parent.glob("*.tmp-*"):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)

    def put_file(self, local: Path, rel: str) -> str:
        dst = f"{self.root.rstrip('/')}/{rel}"
        if self.remote:
            self.fs.put_file(str(local), dst)
        else:
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            if Path(dst).resolve() != local.resolve():
                shutil.copyfile(local, dst)
        return dst
