"""Supervision stores: the captured views that train the Gaussian decoder (paper section 4.4.2).

A companion of the token store (``supervision.zarr`` beside ``store.zarr``): per identity,
``K`` tracked timesteps x ``C`` cameras of RGB and foreground masks at one resolution, the
cameras, the tracked FLAME parameters of those timesteps (VHAP key names) and several
conditioning crops (different cameras and timesteps, to augment the portrait). One Zarr v3
group (store type :data:`STORE_TYPE`, format :data:`SUPERVISION_FORMAT`)::

    rgb              (V, H, W, 3) uint8    views, identity-major then timestep then camera; sharded
    mask             (V, H, W)    uint8    foreground (255) / background (0)
    intrinsics       (C*, 3, 3)   float64  K per camera, pixels, for the W x H images
    world_to_cam     (C*, 4, 4)   float64  OpenCV world-to-camera, metres
    serial           (C*,)        str
    rotation translation neck_pose jaw_pose (T*, 3), eyes_pose (T*, 6), expr (T*, 100)   float32
    timestep_id      (T*,)        str      the capture frame of each timestep
    subject_id       (S,)         str
    counts           (S, 2)       int32    K timesteps, C cameras
    shape            (S, 300)     float32  tracked identity coefficients
    static_offset    (S, Vf, 3)   float32  tracked static offset (zeros when none)
    crops            (S, n, h, w, 3) uint8 conditioning crops
    crop_source      (S, n, 2)    int32    (timestep, camera) index of each crop
    timestep_offsets (S + 1,)     int64    row start of identity i in the per-timestep arrays
    camera_offsets   (S + 1,)     int64    row start of identity i in the per-camera arrays
    offsets          (S + 1,)     int64    view start of identity i; fill -1 (not committed); written LAST

Consistency and durability are the token store's (:mod:`pointillist_data.store.base`,
:mod:`pointillist_data.store.commit`): every batch pads each flat array to its shard
boundary (whole new shards only), ``manifest.json`` lists the sha256 of every shard and
chunk of every array, and the ``offsets`` values are written last, so a reader never sees a
torn identity and a crashed append is recovered on the next open. Source: this toolkit;
GaussianAvatars trains at 550x802 (a quarter of NeRSemble's 2200x3208), the default
resolution here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..capture.camera import Camera, CameraError
from ..fileio import atomic_savez
from ..flame.params import FlameParams, FlameParamsError
from ..progress import Progress
from .base import MANIFEST, MetadataError, Problem, StoreError, StoreReader, open_group
from .check import check_store
from .remote import raise_if_transport
from .token_store import StoreValidationError

__all__ = ["STORE_TYPE", "SUPERVISION_FORMAT", "PER_TIMESTEP", "VIEW_ARRAYS", "TIMESTEP_ARRAYS", "CAMERA_ARRAYS",
           "IDENTITY_ARRAYS", "SupervisionSample", "SupervisionStore", "check_supervision_store",
           "validate_supervision_store", "is_supervision_store"]

STORE_TYPE = "pointillist.supervision"
SUPERVISION_FORMAT = "2.0"  # 1.0: this store's own writer (offsets (S + 1, 3)); 2.0: the shared commit layer
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


def is_supervision_store(path_or_url: str | Path) -> bool:
    """True when ``path_or_url`` is a Zarr group whose attributes say it is a supervision store."""
    try:
        g, _, _ = open_group(path_or_url, "r")
    except Exception:
        return False
    return dict(g.attrs).get("store_type") == STORE_TYPE


class SupervisionStore(StoreReader):
    """Read access to a supervision store (``store[i]`` is identity ``i``'s
    :class:`SupervisionSample`; :meth:`view`, :meth:`cameras`, :meth:`params`, :meth:`crops`
    read parts of it).

    Args:
        group, fs, root: the opened group (:func:`open_group`), its fsspec filesystem and root.
        verify: check each shard's and chunk's sha256 against the manifest the first time it
            is read (raising :class:`~pointillist_data.store.base.ShardChecksumError` naming it).

    Attributes:
        image_size: ``(H, W)`` of the views.
    """

    store_type = STORE_TYPE

    UNIT, NOUN = "identity", "supervision store"
    format_version = SUPERVISION_FORMAT

    def __init__(self, group, fs, root: str, verify: bool = True) -> None:
        super().__init__(group, fs, root, verify)
        try:
            self.image_size = tuple(int(x) for x in self.attrs["image_size"])
        except (KeyError, TypeError, ValueError) as e:  # damaged attributes read unchecked (verify=False)
            raise MetadataError(f"{root}: attributes: zarr.json: unreadable image_size ({type(e).__name__}: {e})") from e
        self._bounds: dict[str, np.ndarray] = {}
        self._counts: np.ndarray | None = None

    @classmethod
    def open(cls, path_or_url: str | Path, verify: bool = True) -> SupervisionStore:
        """Open a store on a local path or fsspec URL.

        Raises:
            StoreNotFoundError: nothing there; IncompleteStoreError: an interrupted creation;
            StoreError: another store type or an unreadable format version.
        """
        g, fs, root = open_group(path_or_url, "r")
        return cls(g, fs, root, verify)

    # ------------------------------------------------------------------ committed rows
    def _boundary(self, name: str) -> np.ndarray:
        if name not in self._bounds:
            self._bounds[name] = self.read(name, 0, self.num_samples + 1).astype(np.int64)
        return self._bounds[name]

    @property
    def timestep_offsets(self) -> np.ndarray:
        """``(S + 1,)`` int64 row start of each identity in the per-timestep arrays."""
        return self._boundary("timestep_offsets")

    @property
    def camera_offsets(self) -> np.ndarray:
        """``(S + 1,)`` int64 row start of each identity in the per-camera arrays."""
        return self._boundary("camera_offsets")

    @property
    def counts(self) -> np.ndarray:
        """``(S, 2)`` int64 ``(K timesteps, C cameras)`` per identity."""
        if self._counts is None:
            self._counts = self.read("counts", 0, self.num_samples).astype(np.int64).reshape(-1, 2)
        return self._counts

    def extents(self) -> dict[str, int]:
        S = self.num_samples
        ext = {name: S + 1 for name in ("offsets", "timestep_offsets", "camera_offsets")}
        ext.update({name: int(self.offsets[S]) for name in VIEW_ARRAYS})
        ext.update({name: int(self.timestep_offsets[S]) for name in TIMESTEP_ARRAYS})
        ext.update({name: int(self.camera_offsets[S]) for name in CAMERA_ARRAYS})
        ext.update({name: S for name in IDENTITY_ARRAYS})
        return ext

    def sample_bounds(self, name: str):
        if name in ("offsets", "timestep_offsets", "camera_offsets"):
            return "boundary"
        if name in VIEW_ARRAYS:
            return self.offsets
        if name in TIMESTEP_ARRAYS:
            return self.timestep_offsets
        return self.camera_offsets if name in CAMERA_ARRAYS else None

    # ------------------------------------------------------------------ identities
    def index(self, subject_id: str) -> int:
        """Row of ``subject_id``. Raises ``KeyError`` naming the store."""
        try:
            return self.subject_ids().index(str(subject_id))
        except ValueError:
            raise KeyError(f"{self.root}: subject '{subject_id}' not in the supervision store") from None

    def cameras(self, i: int) -> list[Camera]:
        """Identity ``i``'s cameras for the stored image size."""
        i = self._check(i)
        s, C = int(self.camera_offsets[i]), int(self.counts[i, 1])
        Kc, M = self.read("intrinsics", s, s + C), self.read("world_to_cam", s, s + C)
        ser = self.read("serial", s, s + C)
        H, W = self.image_size
        return [Camera(M[c], Kc[c], W, H, str(ser[c]), self.root) for c in range(C)]

    def params(self, i: int) -> FlameParams:
        """Identity ``i``'s tracked FLAME parameters (``K`` frames, VHAP keys)."""
        i = self._check(i)
        s, K = int(self.timestep_offsets[i]), int(self.counts[i, 0])
        kw: dict[str, Any] = {k: self.read(k, s, s + K) for k in PER_TIMESTEP}
        so = self.read("static_offset", i, i + 1)
        return FlameParams(**kw, shape=self.read("shape", i, i + 1)[0], static_offset=so,
                           timestep_id=_strs(self.read("timestep_id", s, s + K)), source=f"{self.root}[{i}]")

    def view(self, i: int, k: int, c: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rgb (H, W, 3) uint8, mask (H, W) uint8)`` of identity ``i``, timestep ``k``, camera ``c``."""
        i = self._check(i)
        K, C = (int(x) for x in self.counts[i])
        if not (0 <= k < K and 0 <= c < C):
            raise IndexError(f"view ({k}, {c}) outside {K} timesteps x {C} cameras of identity {i}")
        v = int(self.offsets[i]) + k * C + c
        return self.read("rgb", v, v + 1)[0], self.read("mask", v, v + 1)[0]

    def crops(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(crops (n, h, w, 3) uint8, crop_source (n, 2) int32)`` of identity ``i``."""
        i = self._check(i)
        return self.read("crops", i, i + 1)[0], self.read("crop_source", i, i + 1)[0]

    def __getitem__(self, i: int) -> SupervisionSample:
        """The whole :class:`SupervisionSample` of identity ``i``."""
        i = self._check(i)
        K, C = (int(x) for x in self.counts[i])
        v0 = int(self.offsets[i])
        H, W = self.image_size
        cams = self.cameras(i)
        crops, src = self.crops(i)
        return SupervisionSample(
            self.subject_ids()[i], self.read("rgb", v0, v0 + K * C).reshape(K, C, H, W, 3),
            self.read("mask", v0, v0 + K * C).reshape(K, C, H, W), np.stack([c.K for c in cams]),
            np.stack([c.world_to_cam for c in cams]), np.asarray([c.serial for c in cams]), self.params(i), crops, src)


def _identity_problems(st: SupervisionStore, skip: set[int]) -> list[Problem]:
    """Content checks of every committed identity not in ``skip`` (their objects are damaged)."""
    S = len(st)
    try:
        ids, counts = st.subject_ids(), st.counts
        bounds = np.stack([st.offsets, st.timestep_offsets, st.camera_offsets], 1)
    except MetadataError:  # a damaged zarr.json, which check_store has listed with every identity
        return []
    except Exception as e:
        raise_if_transport(e, st.fs.unstrip_protocol(st.root), "the per-identity arrays")
        return [Problem("store", "", f"per-identity arrays unreadable ({type(e).__name__}: {e})", (0, S) if S else None)]
    out: list[Problem] = []
    if np.any(np.diff(bounds, axis=0) < 0):
        out.append(Problem("offsets", "", "offsets are not monotone", (0, S)))
        return out
    seen: dict[str, int] = {}
    for i, sid in enumerate(ids):
        if sid in seen:
            out.append(Problem("subject_id", "", f"duplicate subject id '{sid}' (also identity {seen[sid]})", (i, i + 1)))
        seen.setdefault(sid, i)
    for i in range(S):
        if i in skip:
            continue
        p = lambda arr, text, i=i: Problem(arr, "", text, (i, i + 1), [ids[i]])  # noqa: E731
        K, C = (int(x) for x in counts[i])
        room = bounds[i + 1] - bounds[i]
        if K < 1 or C < 1 or room[0] < K * C or room[1] < K or room[2] < C:
            out.append(p("counts", f"{K} timesteps x {C} cameras overrun the identity's rows {room.tolist()}"))
            continue
        try:
            st.cameras(i)
            prm = st.params(i)
            if not all(np.all(np.isfinite(getattr(prm, k))) for k in PER_TIMESTEP):
                out.append(p("expr", "non-finite FLAME parameters"))
            _, src = st.crops(i)
            if src.size and (src.min() < 0 or src[:, 0].max() >= K or src[:, 1].max() >= C):
                out.append(p("crop_source", f"crop sources outside its {K} timesteps x {C} cameras"))
            st.view(i, K - 1, C - 1)  # the last view decodes
        except (CameraError, FlameParamsError) as e:
            out.append(p("store", str(e)))
        except Exception as e:  # undecodable despite a matching checksum
            raise_if_transport(e, st.fs.unstrip_protocol(st.root), f"identity {i}")
            out.append(p("store", f"unreadable ({type(e).__name__}: {e})"))
    return out


def check_supervision_store(path_or_url: str | Path, progress: Progress | None = None) -> dict[str, Any]:
    """Check a supervision store like :func:`pointillist_data.store.token_store.check_token_store`: the
    manifest's own checksum, the sha256 of every shard and chunk of every array, array
    metadata and attributes, then per identity monotone offsets that leave room for its rows,
    a unique subject id, valid cameras, finite FLAME parameters and in-range crop sources.

    Returns:
        ``{"problems": [Problem], "notes": [str], "samples", "views", "timesteps",
        "cameras", "shards_checked", "image_size", "format_version"}``.

    Raises:
        StoreNotFoundError: no store there; IncompleteStoreError: an interrupted creation.
    """
    st, problems, notes = check_store(SupervisionStore, path_or_url, progress)
    summary: dict[str, Any] = {"problems": problems, "notes": notes, "samples": 0, "views": 0, "timesteps": 0,
                               "cameras": 0, "shards_checked": 0, "image_size": None, "format_version": None}
    if st is None:
        return summary
    assert isinstance(st, SupervisionStore)
    skip = {i for p in problems if p.samples for i in range(*p.samples)}
    problems += _identity_problems(st, skip)
    try:
        c = st.counts
        summary.update(views=int((c[:, 0] * c[:, 1]).sum()), timesteps=int(c[:, 0].sum()), cameras=int(c[:, 1].sum()))
    except Exception:
        pass
    summary.update(samples=len(st), image_size=list(st.image_size), format_version=st.attrs.get("format_version"),
                   shards_checked=len(st.manifest.chunks) if not any(p.array == MANIFEST for p in problems) else 0)
    return summary


def validate_supervision_store(path_or_url: str | Path) -> dict[str, Any]:
    """:func:`check_supervision_store`, raising when it finds anything.

    Returns:
        The summary without ``problems``.

    Raises:
        StoreNotFoundError / IncompleteStoreError: no (complete) store there.
        StoreValidationError: every problem found (``.problems``), each naming the array,
            the object and the identities affected.
    """
    s = check_supervision_store(path_or_url)
    if s["problems"]:
        raise StoreValidationError(str(path_or_url), s["problems"])
    s.pop("problems")
    return s
