"""Supervision stores: the captured views that train the Gaussian decoder (paper section 4.4.2).

A companion of the token store (``supervision.zarr`` beside ``store.zarr``): per identity,
``K`` tracked timesteps x ``C`` cameras of RGB and foreground masks at one resolution, the
cameras, the tracked FLAME parameters of those timesteps (VHAP key names) and several
conditioning crops (different cameras and timesteps, to augment the portrait). One Zarr v3
group (kind :data:`SUPERVISION_KIND`, format :data:`SUPERVISION_FORMAT`)::

    rgb            (V, H, W, 3) uint8    views, identity-major then timestep then camera; sharded
    mask           (V, H, W)    uint8    foreground (255) / background (0)
    intrinsics     (C*, 3, 3)   float64  K per camera, pixels, for the W x H images
    world_to_cam   (C*, 4, 4)   float64  OpenCV world-to-camera, metres
    serial         (C*,)        str
    rotation translation neck_pose jaw_pose (T*, 3), eyes_pose (T*, 6), expr (T*, 100)   float32
    timestep_id    (T*,)        str      the capture frame of each timestep
    subject_id     (S,)         str
    counts         (S, 2)       int32    K timesteps, C cameras
    shape          (S, 300)     float32  tracked identity coefficients
    static_offset  (S, Vf, 3)   float32  tracked static offset (zeros when none)
    crops          (S, n, h, w, 3) uint8 conditioning crops
    crop_source    (S, n, 2)    int32    (timestep, camera) index of each crop
    offsets        (S + 1, 3)   int64    start of identity i in the view, timestep and camera
                                         arrays; fill -1 (not committed); written LAST

Consistency (as for token stores, :mod:`pointillist_data.store`): a writer only adds whole
new shards or chunks - every flat array is padded to its shard boundary per batch, every
per-identity array has one chunk per identity and ``offsets`` one chunk per row - lists each
new shard with its sha256 in ``manifest.json``, and writes the ``offsets`` rows last, so a
reader never sees a torn identity. Source: this toolkit; GaussianAvatars trains at 550x802
(a quarter of NeRSemble's 2200x3208), the default resolution here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import zarr

from .capture.camera import Camera, CameraError
from .fileio import atomic_savez
from .flame.params import FlameParams, FlameParamsError
from .store import MANIFEST, ShardChecksumError, StoreError, open_group, sha256_bytes, shard_keys

__all__ = ["SUPERVISION_KIND", "SUPERVISION_FORMAT", "PER_TIMESTEP", "VIEW_ARRAYS", "TIMESTEP_ARRAYS",
           "CAMERA_ARRAYS", "IDENTITY_ARRAYS", "SupervisionSample", "SupervisionStore", "validate_supervision_store",
           "is_supervision_store"]

SUPERVISION_KIND = "pointillist-supervision"
SUPERVISION_FORMAT = "1.0"
PER_TIMESTEP = {"rotation": 3, "translation": 3, "neck_pose": 3, "jaw_pose": 3, "eyes_pose": 6, "expr": 100}
VIEW_ARRAYS = ("rgb", "mask")
TIMESTEP_ARRAYS = (*PER_TIMESTEP, "timestep_id")
CAMERA_ARRAYS = ("intrinsics", "world_to_cam", "serial")
IDENTITY_ARRAYS = ("subject_id", "counts", "shape", "static_offset", "crops", "crop_source")


@dataclass
class SupervisionSample:
    """One identity's supervision (NumPy arrays).

    Attributes:
        subject_id: participant id (``"017"``), the same as in the token store.
        rgb: ``(K, C, H, W, 3)`` uint8 colour-corrected frames.
        mask: ``(K, C, H, W)`` uint8 foreground masks (255 foreground).
        intrinsics: ``(C, 3, 3)`` float64 K for the ``W x H`` images (pixels).
        world_to_cam: ``(C, 4, 4)`` float64 OpenCV world-to-camera (metres).
        serials: ``(C,)`` camera serials.
        params: tracked FLAME parameters of the ``K`` timesteps (VHAP keys, ``timestep_id`` set).
        crops: ``(n, h, w, 3)`` uint8 conditioning crops.
        crop_source: ``(n, 2)`` int32 ``(timestep, camera)`` index of each crop.
    """

    subject_id: str
    rgb: np.ndarray
    mask: np.ndarray
    intrinsics: np.ndarray
    world_to_cam: np.ndarray
    serials: np.ndarray
    params: FlameParams
    crops: np.ndarray
    crop_source: np.ndarray

    @property
    def num_timesteps(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def num_cameras(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the views."""
        return int(self.rgb.shape[2]), int(self.rgb.shape[3])

    def cameras(self) -> list[Camera]:
        """The ``C`` cameras (validated)."""
        H, W = self.image_size
        return [Camera(self.world_to_cam[c], self.intrinsics[c], W, H, str(self.serials[c]), self.subject_id)
                for c in range(self.num_cameras)]

    def validate(self, where: str = "<memory>") -> None:
        """Raise :class:`StoreError` for inconsistent shapes, dtypes or non-finite values."""
        w = f"{where}: subject '{self.subject_id}'"
        if self.rgb.dtype != np.uint8 or self.rgb.ndim != 5 or self.rgb.shape[-1] != 3:
            raise StoreError(f"{w}: rgb must be (K, C, H, W, 3) uint8, got {self.rgb.shape} {self.rgb.dtype}")
        K, C, H, W = self.rgb.shape[:4]
        if K < 1 or C < 1:
            raise StoreError(f"{w}: needs at least one timestep and one camera")
        checks = (("mask", self.mask, (K, C, H, W), np.uint8), ("intrinsics", self.intrinsics, (C, 3, 3), None),
                  ("world_to_cam", self.world_to_cam, (C, 4, 4), None), ("crop_source", self.crop_source,
                                                                         (len(self.crops), 2), None))
        for name, a, shape, dt in checks:
            a = np.asarray(a)
            if a.shape != shape or (dt is not None and a.dtype != dt):
                raise StoreError(f"{w}: '{name}' has shape {a.shape} {a.dtype}, expected {shape}")
        if len(self.serials) != C:
            raise StoreError(f"{w}: {len(self.serials)} serials for {C} cameras")
        if self.crops.dtype != np.uint8 or self.crops.ndim != 4 or self.crops.shape[-1] != 3:
            raise StoreError(f"{w}: crops must be (n, h, w, 3) uint8, got {self.crops.shape} {self.crops.dtype}")
        cs = np.asarray(self.crop_source)
        if cs.size and (cs.min() < 0 or cs[:, 0].max() >= K or cs[:, 1].max() >= C):
            raise StoreError(f"{w}: crop_source indexes outside {K} timesteps x {C} cameras")
        if self.params.num_frames != K:
            raise StoreError(f"{w}: {self.params.num_frames} FLAME parameter frames for {K} timesteps")
        try:
            self.cameras()
        except CameraError as e:
            raise StoreError(f"{w}: {e}") from e

    def save(self, path: str | Path) -> Path:
        """Write an npz atomically (the output of the ``supervise`` stage)."""
        arrays = {k: np.asarray(getattr(self, k)) for k in ("rgb", "mask", "intrinsics", "world_to_cam", "serials",
                                                            "crops", "crop_source")}
        arrays.update({f"flame_{k}": v for k, v in self.params.to_dict().items()})
        return atomic_savez(path, subject_id=np.asarray(self.subject_id), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> SupervisionSample:
        """Read :meth:`save`'s npz.

        Raises:
            FileNotFoundError: no such file. StoreError: missing keys or bad FLAME parameters.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: supervision sample not found")
        with np.load(path, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        need = ["subject_id", "rgb", "mask", "intrinsics", "world_to_cam", "serials", "crops", "crop_source"]
        missing = [k for k in need if k not in d]
        if missing:
            raise StoreError(f"{path}: missing keys {missing}")
        try:
            params = FlameParams(**{k[6:]: v for k, v in d.items() if k.startswith("flame_")}, source=str(path))
        except (TypeError, FlameParamsError) as e:
            raise StoreError(f"{path}: FLAME parameters: {e}") from e
        return cls(str(d["subject_id"]), d["rgb"], d["mask"], d["intrinsics"], d["world_to_cam"], d["serials"].astype(str),
                   params, d["crops"], d["crop_source"].astype(np.int32))


def _strs(a: np.ndarray) -> np.ndarray:
    """A plain ``<U`` array from zarr's variable-length strings (NumPy ``StringDType``)."""
    return np.asarray([str(x) for x in a.tolist()], dtype=str)


def _committed(offsets: np.ndarray) -> int:
    ok = offsets[:, 0] >= 0 if offsets.ndim == 2 else offsets >= 0
    n = int(np.argmin(ok)) if not ok.all() else len(ok)
    return max(0, n - 1)


def is_supervision_store(path_or_url: str | Path) -> bool:
    """True when ``path_or_url`` is a Zarr group whose attributes say it is a supervision store."""
    try:
        g, _, _ = open_group(path_or_url, "r")
    except Exception:
        return False
    return dict(g.attrs).get("kind") == SUPERVISION_KIND


class SupervisionStore:
    """Read access to a supervision store.

    Args:
        group, fs, root: the opened group, its fsspec filesystem and root path.
        verify: check each shard's sha256 against the manifest the first time it is read.
    """

    def __init__(self, group: zarr.Group, fs: fsspec.AbstractFileSystem, root: str, verify: bool = True) -> None:
        self.group, self.fs, self.root, self.verify = group, fs, root.rstrip("/"), verify
        attrs = dict(group.attrs)
        if attrs.get("kind") != SUPERVISION_KIND:
            raise StoreError(f"{root}: not a pointillist supervision store (attribute kind={attrs.get('kind')!r})")
        if str(attrs.get("format_version", "")).split(".")[0] != SUPERVISION_FORMAT.split(".")[0]:
            raise StoreError(f"{root}: supervision format {attrs.get('format_version')} is not readable by "
                             f"{SUPERVISION_FORMAT}")
        self.attrs = attrs
        off = np.asarray(group["offsets"][:], dtype=np.int64)
        self.num_samples = _committed(off)
        self.offsets = off[: self.num_samples + 1]
        self.counts = np.asarray(group["counts"][: self.num_samples], dtype=np.int64).reshape(-1, 2)
        self.image_size = tuple(attrs["image_size"])
        self._manifest: dict | None = None
        self._verified: set[str] = set()
        self._ids: list[str] | None = None

    @classmethod
    def open(cls, path_or_url: str | Path, verify: bool = True) -> SupervisionStore:
        """Open a store on a local path or fsspec URL.

        Raises:
            StoreError: no supervision store there, or an unreadable format.
        """
        try:
            g, fs, root = open_group(path_or_url, "r")
        except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError) as e:
            raise StoreError(f"{path_or_url}: no supervision store ({e})") from e
        return cls(g, fs, root, verify)

    def __len__(self) -> int:
        return self.num_samples

    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            p = f"{self.root}/{MANIFEST}"
            if not self.fs.exists(p):
                raise StoreError(f"{self.root}: {MANIFEST} missing")
            self._manifest = json.loads(self.fs.cat_file(p))
        return self._manifest

    def _read(self, name: str, start: int, stop: int) -> np.ndarray:
        arr = self.group[name]
        if self.verify:
            for key in shard_keys(arr, start, stop):
                if key in self._verified:
                    continue
                entry = self.manifest["shards"].get(key)
                if entry is None:
                    raise ShardChecksumError(f"{self.root}: shard {key} is not listed in {MANIFEST}")
                if sha256_bytes(self.fs.cat_file(f"{self.root}/{key}")) != entry["sha256"]:
                    raise ShardChecksumError(f"{self.root}: shard {key} is corrupted (sha256 mismatch with {MANIFEST})")
                self._verified.add(key)
        return np.asarray(arr[start:stop])

    def _check(self, i: int) -> int:
        if not -self.num_samples <= i < self.num_samples:
            raise IndexError(f"identity {i} out of range for a supervision store of {self.num_samples}")
        return i % self.num_samples

    def subject_ids(self) -> list[str]:
        if self._ids is None:
            self._ids = [str(s) for s in self.group["subject_id"][: self.num_samples]]
        return self._ids

    def index(self, subject_id: str) -> int:
        """Row of ``subject_id``. Raises ``KeyError`` naming the store."""
        try:
            return self.subject_ids().index(str(subject_id))
        except ValueError:
            raise KeyError(f"{self.root}: subject '{subject_id}' not in the supervision store") from None

    def cameras(self, i: int) -> list[Camera]:
        """Identity ``i``'s cameras for the stored image size."""
        i = self._check(i)
        s, C = int(self.offsets[i, 2]), int(self.counts[i, 1])
        Kc, M = self._read("intrinsics", s, s + C), self._read("world_to_cam", s, s + C)
        ser = self._read("serial", s, s + C)
        H, W = self.image_size
        return [Camera(M[c], Kc[c], W, H, str(ser[c]), self.root) for c in range(C)]

    def params(self, i: int) -> FlameParams:
        """Identity ``i``'s tracked FLAME parameters (``K`` frames, VHAP keys)."""
        i = self._check(i)
        s, K = int(self.offsets[i, 1]), int(self.counts[i, 0])
        kw: dict[str, Any] = {k: self._read(k, s, s + K) for k in PER_TIMESTEP}
        so = self._read("static_offset", i, i + 1)
        return FlameParams(**kw, shape=self._read("shape", i, i + 1)[0], static_offset=so,
                           timestep_id=_strs(self._read("timestep_id", s, s + K)), source=f"{self.root}[{i}]")

    def view(self, i: int, k: int, c: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb (H, W, 3) uint8, mask (H, W) uint8)`` of identity ``i``, timestep ``k``, camera ``c``."""
        i = self._check(i)
        K, C = (int(x) for x in self.counts[i])
        if not (0 <= k < K and 0 <= c < C):
            raise IndexError(f"view ({k}, {c}) outside {K} timesteps x {C} cameras of identity {i}")
        v = int(self.offsets[i, 0]) + k * C + c
        return self._read("rgb", v, v + 1)[0], self._read("mask", v, v + 1)[0]

    def crops(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(crops (n, h, w, 3) uint8, crop_source (n, 2) int32)`` of identity ``i``."""
        i = self._check(i)
        return self._read("crops", i, i + 1)[0], self._read("crop_source", i, i + 1)[0]

    def __getitem__(self, i: int) -> SupervisionSample:
        """The whole :class:`SupervisionSample` of identity ``i``."""
        i = self._check(i)
        K, C = (int(x) for x in self.counts[i])
        v0 = int(self.offsets[i, 0])
        H, W = self.image_size
        cams = self.cameras(i)
        crops, src = self.crops(i)
        return SupervisionSample(
            self.subject_ids()[i], self._read("rgb", v0, v0 + K * C).reshape(K, C, H, W, 3),
            self._read("mask", v0, v0 + K * C).reshape(K, C, H, W), np.stack([c.K for c in cams]),
            np.stack([c.world_to_cam for c in cams]), np.asarray([c.serial for c in cams]), self.params(i), crops, src)


def validate_supervision_store(path_or_url: str | Path) -> dict[str, Any]:
    """Check a supervision store: every shard's checksum, monotone offsets that leave room
    for each identity's rows, unique subjects, valid cameras, finite FLAME parameters and
    in-range crop sources.

    Returns:
        A summary (``samples``, ``views``, ``timesteps``, ``cameras``, ``shards_checked``,
        ``image_size``, ``format_version``).

    Raises:
        StoreError / ShardChecksumError: the first problem, named.
    """
    st = SupervisionStore.open(path_or_url, verify=True)
    manifest = st.manifest
    for key, entry in manifest["shards"].items():
        p = f"{st.root}/{key}"
        if not st.fs.exists(p):
            raise ShardChecksumError(f"{st.root}: shard {key} listed in {MANIFEST} is missing")
        if sha256_bytes(st.fs.cat_file(p)) != entry["sha256"]:
            raise ShardChecksumError(f"{st.root}: shard {key} is corrupted (sha256 mismatch with {MANIFEST})")
        st._verified.add(key)
    ids = st.subject_ids()
    if len(set(ids)) != len(ids):
        raise StoreError(f"{st.root}: duplicate subject ids")
    if np.any(np.diff(st.offsets, axis=0) < 0):
        raise StoreError(f"{st.root}: offsets are not monotone")
    for i, sid in enumerate(ids):
        K, C = (int(x) for x in st.counts[i])
        room = st.offsets[i + 1] - st.offsets[i]
        if K < 1 or C < 1 or room[0] < K * C or room[1] < K or room[2] < C:
            raise StoreError(f"{st.root}: identity {i} ({sid}) has {K} timesteps x {C} cameras that overrun its rows")
        try:
            st.cameras(i)
            st.params(i)
        except (CameraError, FlameParamsError) as e:
            raise StoreError(f"{st.root}: identity {i} ({sid}): {e}") from e
        _, src = st.crops(i)
        if src.size and (src.min() < 0 or src[:, 0].max() >= K or src[:, 1].max() >= C):
            raise StoreError(f"{st.root}: identity {i} ({sid}): crop_source outside its views")
    return {"samples": len(st), "views": int((st.counts[:, 0] * st.counts[:, 1]).sum()),
            "timesteps": int(st.counts[:, 0].sum()), "cameras": int(st.counts[:, 1].sum()),
            "shards_checked": len(manifest["shards"]), "image_size": list(st.image_size),
            "format_version": st.attrs["format_version"], "kind": SUPERVISION_KIND}
