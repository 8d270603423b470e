"""NeRSemble v2 captures on disk: layout, reader (calibration, colour, video, background) and writer.

Layout (the official ``nersemble-data`` package's ``ASSETS``; its constants are used when
the package is installed, and a test checks this copy against it)::

    <pid:03d>/calibration/camera_params.json       world_2_cam {serial: 4x4}, intrinsics 3x3
    <pid:03d>/calibration/color_calibration.json   {serial: CCM (3 x terms)}
    <pid:03d>/sequences/<SEQ>/images/cam_<serial>.mp4
    <pid:03d>/sequences/BACKGROUND/image_<serial>.jpg

Intrinsics are for the full-resolution 2200 x 3208 (W x H) frames; frames of any other
size scale K per axis (so downscaled videos keep correct cameras). Colour correction
applies the CCM in linear sRGB with the augmented Cheung 2004 terms (colour-science) and
re-encodes to sRGB - and, unlike VHAP v2, the corrected image is the one returned.
Optional ``alpha_maps/cam_<serial>.mp4`` beside ``images/`` give foreground masks;
otherwise masks come from background subtraction (:func:`foreground_mask`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import colour
import imageio.v3 as iio
import numpy as np
from colour.characterisation import matrix_augmented_Cheung2004
from PIL import Image

from ..errors import PointillistError
from .camera import Camera, CameraError
from .video import read_video, video_info

try:  # the official layout constants, when the package is installed
    from nersemble_data.constants import ASSETS as _OFFICIAL_ASSETS
    from nersemble_data.constants import SERIALS as _OFFICIAL_SERIALS
except Exception:  # pragma: no cover - depends on the environment
    _OFFICIAL_ASSETS, _OFFICIAL_SERIALS = None, None

__all__ = ["SERIALS", "ASSETS", "FULL_WIDTH", "FULL_HEIGHT", "NersembleError", "NersembleSequence",
           "write_nersemble_calibration", "apply_color_correction", "foreground_mask", "MASK_THRESHOLD"]

SERIALS = ["222200042", "222200044", "222200046", "222200040", "222200036", "222200048", "220700191", "222200041",
           "222200037", "222200038", "222200047", "222200043", "222200049", "222200039", "222200045", "221501007"]
ASSETS = {
    "calibration": "{p_id:03d}/calibration/camera_params.json",
    "color_calibration": "{p_id:03d}/calibration/color_calibration.json",
    "images": "{p_id:03d}/sequences/{seq_name:}/images/cam_{serial:}.mp4",
    "backgrounds": "{p_id:03d}/sequences/BACKGROUND/image_{serial:}.jpg",
}
if _OFFICIAL_ASSETS is not None:
    SERIALS = list(_OFFICIAL_SERIALS)
    ASSETS = {**_OFFICIAL_ASSETS["per_person"], **_OFFICIAL_ASSETS["per_cam"], **_OFFICIAL_ASSETS["per_person_cam"]}
FULL_WIDTH, FULL_HEIGHT = 2200, 3208
# Background subtraction threshold: a pixel is foreground when its largest per-channel
# absolute difference to the background exceeds this (on a 0..1 scale). 0.08 (about 20/255)
# sits above H.264 noise on static backgrounds and below skin-to-grey-wall contrast.
MASK_THRESHOLD = 0.08


class NersembleError(PointillistError, ValueError):
    """A NeRSemble capture is incomplete or inconsistent (the message names participant,
    sequence and serial)."""


def apply_color_correction(image: np.ndarray, ccm: np.ndarray) -> np.ndarray:
    """Colour-correct an sRGB image with a NeRSemble CCM.

    Args:
        image: ``(..., 3)`` uint8 or float in [0, 1], sRGB encoded.
        ccm: ``(3, terms)`` matrix for the augmented Cheung 2004 terms (3, 5, 7, 8, 10, ...).

    Returns:
        The corrected image, same dtype as the input (uint8 clipped, float unclipped).
    """
    is_u8 = image.dtype == np.uint8
    rgb = image.astype(np.float64) / 255.0 if is_u8 else np.asarray(image, dtype=np.float64)
    lin = colour.cctf_decoding(rgb, function="sRGB")
    aug = matrix_augmented_Cheung2004(lin.reshape(-1, 3), terms=ccm.shape[-1])
    out = colour.cctf_encoding((aug @ np.asarray(ccm, dtype=np.float64).T).reshape(rgb.shape), function="sRGB")
    if is_u8:
        return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def foreground_mask(image: np.ndarray, background: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Foreground mask ``(..., H, W)`` float32 in {0, 1} by background subtraction.

    A pixel is foreground when ``max_c |image - background| > threshold`` (0..1 scale);
    see :data:`MASK_THRESHOLD` for the default.
    """
    a = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    b = background.astype(np.float32) / (255.0 if background.dtype == np.uint8 else 1.0)
    return (np.abs(a - b).max(-1) > threshold).astype(np.float32)


def _read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise NersembleError(f"{what}: {path} not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise NersembleError(f"{what}: {path} is not valid JSON ({e})") from e


class NersembleSequence:
    """One participant's sequence in a NeRSemble v2 folder.

    Args:
        root: the NeRSemble folder (holding ``<pid:03d>/``).
        participant: participant id.
        sequence: sequence name (``EXP-1-head``...).
        serials: cameras to use (default: every serial with a video).

    Raises:
        NersembleError: missing calibration or videos, calibration and video that disagree
            (frame counts, aspect ratio), non-finite matrices or a K that does not fit.
    """

    def __init__(self, root: str | Path, participant: int, sequence: str, serials: list[str] | None = None) -> None:
        self.root, self.participant, self.sequence = Path(root), int(participant), sequence
        self.where = f"participant {self.participant:03d}, sequence {sequence}"
        calib = _read_json(self._path("calibration"), self.where)
        if "world_2_cam" not in calib or "intrinsics" not in calib:
            raise NersembleError(f"{self.where}: camera_params.json needs 'world_2_cam' and 'intrinsics'")
        self._w2c = {str(k): np.asarray(v, dtype=np.float64) for k, v in calib["world_2_cam"].items()}
        intr = calib["intrinsics"]
        self._K = {s: np.asarray(intr[s] if isinstance(intr, dict) else intr, dtype=np.float64) for s in self._w2c}
        if serials is None:
            serials = [s for s in SERIALS if self._path("images", serial=s).exists()]
            serials += sorted(s for s in self._w2c if s not in SERIALS and self._path("images", serial=s).exists())
        if not serials:
            raise NersembleError(f"{self.where}: no camera videos under {self._path('images', serial='*').parent}")
        self.serials = list(serials)
        ccm_path = self._path("color_calibration")
        self._ccm = ({str(k): np.asarray(v, dtype=np.float64) for k, v in _read_json(ccm_path, self.where).items()}
                     if ccm_path.exists() else {})
        self._info = {}
        for s in self.serials:
            if s not in self._w2c:
                raise NersembleError(f"{self.where}, serial {s}: missing from camera_params.json")
            p = self._path("images", serial=s)
            if not p.exists():
                raise NersembleError(f"{self.where}, serial {s}: video {p} not found")
            self._info[s] = video_info(p)
        counts = {s: i[0] for s, i in self._info.items()}
        if len(set(counts.values())) > 1:
            raise NersembleError(f"{self.where}: cameras disagree on frame counts {counts}")
        self.cameras = {s: self._camera(s) for s in self.serials}

    def _path(self, asset: str, serial: str = "") -> Path:
        return self.root / ASSETS[asset].format(p_id=self.participant, seq_name=self.sequence, serial=serial)

    def _camera(self, s: str) -> Camera:
        _, h, w = self._info[s]
        if abs(w / h - FULL_WIDTH / FULL_HEIGHT) > 0.01:
            raise NersembleError(f"{self.where}, serial {s}: video {w}x{h} does not have the calibration's "
                                 f"{FULL_WIDTH}x{FULL_HEIGHT} aspect ratio")
        try:
            full = Camera(self._w2c[s], self._K[s], FULL_WIDTH, FULL_HEIGHT, s, self.where)
        except CameraError as e:
            raise NersembleError(str(e)) from e
        return full.resized(w, h)

    @property
    def num_frames(self) -> int:
        return next(iter(self._info.values()))[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of the first camera's video."""
        _, h, w = next(iter(self._info.values()))
        return w, h

    def frames(self, serial: str, frames: list[int] | None = None, color_correct: bool = True) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 frames of one camera, colour-corrected when a CCM exists."""
        imgs = read_video(self._path("images", serial=serial), frames)
        if color_correct and serial in self._ccm:
            imgs = apply_color_correction(imgs, self._ccm[serial])
        return imgs

    def background(self, serial: str) -> np.ndarray | None:
        """The BACKGROUND image ``(H, W, 3)`` uint8 at the video's size, or ``None``."""
        p = self._path("backgrounds", serial=serial)
        if not p.exists():
            return None
        img = np.asarray(iio.imread(p))[..., :3]
        w, h = self.cameras[serial].width, self.cameras[serial].height
        if img.shape[:2] != (h, w):
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        if serial in self._ccm:
            img = apply_color_correction(img, self._ccm[serial])
        return img

    def masks(self, serial: str, frames: list[int] | None = None, images: np.ndarray | None = None) -> np.ndarray:
        """Foreground masks ``(T, H, W)`` float32: from ``alpha_maps/`` when present, else by
        background subtraction (:func:`foreground_mask`).

        Raises:
            NersembleError: neither alpha maps nor a background image exist for the serial.
        """
        alpha = self._path("images", serial=serial).parent.parent / "alpha_maps" / f"cam_{serial}.mp4"
        if alpha.exists():
            return read_video(alpha, frames)[..., 0].astype(np.float32) / 255.0
        bg = self.background(serial)
        if bg is None:
            raise NersembleError(f"{self.where}, serial {serial}: no alpha maps and no BACKGROUND image for masks")
        imgs = self.frames(serial, frames) if images is None else images
        return foreground_mask(imgs, bg)


def write_nersemble_calibration(root: str | Path, participant: int, cameras: list[Camera],
                                ccms: dict[str, np.ndarray] | None = None) -> None:
    """Write ``camera_params.json`` (full-resolution intrinsics, one 3x3 per serial) and
    ``color_calibration.json`` (identity CCMs unless given), atomically."""
    root = Path(root)
    calib = {
        "world_2_cam": {c.serial: c.world_to_cam.tolist() for c in cameras},
        "intrinsics": {c.serial: c.resized(FULL_WIDTH, FULL_HEIGHT).K.tolist() for c in cameras},
    }
    ccms = ccms or {c.serial: np.eye(3) for c in cameras}
    for key, obj in (("calibration", calib), ("color_calibration", {k: np.asarray(v).tolist() for k, v in ccms.items()})):
        p = root / ASSETS[key].format(p_id=participant)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps(obj, indent=1))
        os.replace(tmp, p)
