"""NeRSemble v2 captures on disk: layout, reader (calibration, colour, video, background) and writer.

Layout (the official ``nersemble-data`` package's ``ASSETS``; its constants are used when
the package is installed, and a test checks this copy against it)::

    <pid:03d>/calibration/camera_params.json       world_2_cam {serial: 4x4}, intrinsics 3x3
    <pid:03d>/calibration/color_calibration.json   {serial: CCM (3 x terms)}
    <pid:03d>/sequences/<SEQ>/images/cam_<serial>.mp4
    <pid:03d>/sequences/BACKGROUND/image_<serial>.jpg

Intrinsics are for the full-resolution 2200 x 3208 (W x H) frames; frames of any other
size scale K per axis (so downscaled videos keep correct cameras). A ``scale`` reads every
frame resized to that fraction of the full resolution (never upsampled), decoded one frame
at a time (:func:`~pointillist_data.capture.video.iter_video`), with K following. Colour correction
applies the CCM in linear sRGB with the augmented Cheung 2004 terms (colour-science) and
re-encodes to sRGB - and, unlike VHAP v2, the corrected image is the one returned.
Optional ``alpha_maps/cam_<serial>.mp4`` beside ``images/`` give foreground masks;
otherwise masks come from the ``matting`` method (:mod:`.matting`; default ``threshold``,
the fixed background subtraction of :func:`foreground_mask`). Masks are uint8 alpha
(0 background .. 255 foreground), never float arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import colour
import imageio.v3 as iio
import numpy as np
from colour.characterisation import matrix_augmented_Cheung2004
from PIL import Image

from ..errors import PointillistError
from ..fileio import atomic_write_text
from .camera import Camera, CameraError
from .matting import MASK_THRESHOLD, foreground_mask, make_matter, parse_matting
from .video import iter_video, video_info

try:  # the official layout constants, when the package is installed
    from nersemble_data.constants import ASSETS as _OFFICIAL_ASSETS
    from nersemble_data.constants import SERIALS as _OFFICIAL_SERIALS
except Exception:  # pragma: no cover - depends on the environment
    _OFFICIAL_ASSETS, _OFFICIAL_SERIALS = None, None

__all__ = ["SERIALS", "ASSETS", "FULL_WIDTH", "FULL_HEIGHT", "NersembleError", "NersembleSequence",
           "write_nersemble_calibration", "apply_color_correction", "foreground_mask", "MASK_THRESHOLD",
           "list_sequences", "scaled_size"]

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


def scaled_size(width: int, height: int, scale: float | None) -> tuple[int, int]:
    """The frame size read for a video of ``width x height`` at ``scale`` (a fraction of the
    full 2200 x 3208 NeRSemble frame): ``round(2200 s) x round(3208 s)``, but never larger
    than the video (frames are not upsampled); ``None`` keeps the video's size."""
    if scale is None:
        return width, height
    w, h = max(2, round(FULL_WIDTH * scale)), max(2, round(FULL_HEIGHT * scale))
    return (w, h) if w < width else (width, height)


def list_sequences(root: str | Path, participant: int) -> list[str]:
    """Names of a participant's sequences that hold camera videos (``BACKGROUND`` excluded)."""
    base = Path(root) / ASSETS["images"].format(p_id=int(participant), seq_name="X", serial="s").split("/X/")[0]
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and p.name != "BACKGROUND" and any(p.glob("*/cam_*.mp4")))


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
        scale: read frames at this fraction of the full 2200 x 3208 resolution (see
            :func:`scaled_size`); ``None`` reads the videos at their own size.
        matting: how masks are made without ``alpha_maps/``: a
            :func:`~pointillist_data.capture.matting.parse_matting` spec (``threshold``,
            ``background``, ``mediapipe``, ``rvm:<weights>``, ``bgmv2:<weights>``).

    Raises:
        NersembleError: missing calibration or videos, calibration and video that disagree
            (frame counts, aspect ratio), non-finite matrices or a K that does not fit.
        MattingError: an unknown matting spec.
    """

    def __init__(self, root: str | Path, participant: int, sequence: str, serials: list[str] | None = None,
                 scale: float | None = None, matting: str = "threshold") -> None:
        parse_matting(matting)  # a bad spec fails before any video is opened
        self.root, self.participant, self.sequence, self.scale = Path(root), int(participant), sequence, scale
        self.matting = matting
        self.where = f"participant {self.participant:03d}, sequence {sequence}"
        calib_path = self._path("calibration")
        calib = _read_json(calib_path, self.where)
        if not isinstance(calib, dict) or "world_2_cam" not in calib or "intrinsics" not in calib:
            raise NersembleError(f"{calib_path}: needs 'world_2_cam' and 'intrinsics' ({self.where})")
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
                raise NersembleError(f"{self.where}, serial {s}: missing from {self._path('calibration')}")
            p = self._path("images", serial=s)
            if not p.exists():
                raise NersembleError(f"{self.where}, serial {s}: video {p} not found")
            self._info[s] = video_info(p)
        counts = {s: i[0] for s, i in self._info.items()}
        if len(set(counts.values())) > 1:
            raise NersembleError(f"{self.where}: cameras disagree on frame counts {counts}")
        self.cameras = {s: self._camera(s) for s in self.serials}
        self._bg: dict[str, np.ndarray | None] = {}
        self._matters: dict = {}  # one per camera: RVM's recurrent state follows that camera's frames

    def video_path(self, serial: str) -> Path:
        """The colour video of a camera."""
        return self._path("images", serial=serial)

    def video_size(self, serial: str) -> tuple[int, int]:
        """``(width, height)`` of a camera's video as stored (before any scaling)."""
        _, h, w = self._info[serial]
        return w, h

    def _path(self, asset: str, serial: str = "") -> Path:
        return self.root / ASSETS[asset].format(p_id=self.participant, seq_name=self.sequence, serial=serial)

    def _camera(self, s: str) -> Camera:
        _, h, w = self._info[s]
        if abs(w / h - FULL_WIDTH / FULL_HEIGHT) > 0.01:
            raise NersembleError(f"{self.where}, serial {s}: video {w}x{h} does not have the calibration's "
                                 f"{FULL_WIDTH}x{FULL_HEIGHT} aspect ratio")
        try:
            # the calibration file is named: the matrices are wrong there, not in the video
            full = Camera(self._w2c[s], self._K[s], FULL_WIDTH, FULL_HEIGHT, s,
                          f"{self.where}: {self._path('calibration')}")
        except CameraError as e:
            raise NersembleError(str(e)) from e
        return full.resized(*scaled_size(w, h, self.scale))

    @property
    def num_frames(self) -> int:
        return next(iter(self._info.values()))[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` of the frames read (the first camera's, after scaling)."""
        cam = self.cameras[self.serials[0]]
        return cam.width, cam.height

    def iter_frames(self, serial: str, frames: list[int] | None = None, color_correct: bool = True):
        """Yield ``(index, (H, W, 3) uint8)`` frames of one camera one at a time, at the
        selected scale, colour-corrected when a CCM exists (after resizing: cheaper, and the
        correction is per pixel)."""
        cam = self.cameras[serial]
        ccm = self._ccm.get(serial) if color_correct else None
        for i, img in iter_video(self._path("images", serial=serial), frames, (cam.width, cam.height)):
            yield i, (apply_color_correction(img, ccm) if ccm is not None else img)

    def frames(self, serial: str, frames: list[int] | None = None, color_correct: bool = True) -> np.ndarray:
        """``(T, H, W, 3)`` uint8 frames of one camera in one array (short clips; iterate
        :meth:`iter_frames` for long ones)."""
        return np.stack([f for _, f in self.iter_frames(serial, frames, color_correct)])

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

    def mask_of(self, serial: str, image: np.ndarray, alpha: np.ndarray | None = None) -> np.ndarray:
        """The ``(H, W)`` uint8 mask (0..255) of one colour-corrected frame by the sequence's
        ``matting`` method, or ``alpha`` (a decoded alpha-map frame) when given."""
        if alpha is not None:
            return alpha
        if serial not in self._matters:
            self._matters[serial] = make_matter(self.matting)
        matter = self._matters[serial]
        bg = None
        if matter.needs_background:
            if serial not in self._bg:
                self._bg[serial] = self.background(serial)
            bg = self._bg[serial]
            if bg is None:
                raise NersembleError(f"{self.where}, serial {serial}: no alpha maps and no BACKGROUND image for masks "
                                     f"(matting '{matter.method}' needs one)")
        if matter.method == "threshold":  # integer maths, as always: no float copy of the frame
            return foreground_mask(image, bg).astype(np.uint8) * np.uint8(255)
        return np.clip(np.round(matter(image, bg) * 255), 0, 255).astype(np.uint8)

    def alpha_path(self, serial: str) -> Path | None:
        """``alpha_maps/cam_<serial>.mp4`` beside ``images/`` when it exists."""
        p = self._path("images", serial=serial).parent.parent / "alpha_maps" / f"cam_{serial}.mp4"
        return p if p.exists() else None

    def iter_frames_and_masks(self, serial: str, frames: list[int] | None = None):
        """Yield ``(index, image (H, W, 3) uint8, mask (H, W) uint8 0..255)`` one frame at a time."""
        cam = self.cameras[serial]
        ap = self.alpha_path(serial)
        alphas = iter_video(ap, frames, (cam.width, cam.height)) if ap is not None else None
        for i, img in self.iter_frames(serial, frames):
            a = np.ascontiguousarray(next(alphas)[1][..., 0]) if alphas is not None else None
            yield i, img, self.mask_of(serial, img, a)

    def masks(self, serial: str, frames: list[int] | None = None, images: np.ndarray | None = None) -> np.ndarray:
        """Foreground masks ``(T, H, W)`` uint8 (0 background .. 255 foreground): from
        ``alpha_maps/`` when present, else by the ``matting`` method (:meth:`mask_of`) on
        ``images`` (default: the frames decoded again), in frame order.

        Raises:
            NersembleError: neither alpha maps nor a background image (for a method that
                needs one) exist for the serial.
            MattingError: the method's weights are missing or unreadable.
        """
        if images is None:
            return np.stack([m for _, _, m in self.iter_frames_and_masks(serial, frames)])
        ap = self.alpha_path(serial)
        cam = self.cameras[serial]
        if ap is not None:
            return np.stack([a[..., 0] for _, a in iter_video(ap, frames, (cam.width, cam.height))])
        return np.stack([self.mask_of(serial, img) for img in images])


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
        atomic_write_text(root / ASSETS[key].format(p_id=participant), json.dumps(obj, indent=1))
