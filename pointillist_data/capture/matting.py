"""Foreground alpha of capture frames, by a method of the user's choice (``matting`` option).

Methods, named by a spec string (the ``matting`` field of the tracking and supervision
configs, as ``landmarks`` names a landmark source):

``threshold``
    The original rule: foreground where ``max_c |frame - background| > 0.08``
    (:func:`~pointillist_data.capture.nersemble.foreground_mask`). Holds on flat, evenly lit
    backgrounds only. The default (earlier runs' masks unchanged).
``background``
    Background subtraction that holds on textured and shadowed backgrounds (NeRSemble's
    ``BACKGROUND`` plates): Horprasert et al. 1999's split of a colour difference into a
    brightness ratio and a chromatic distortion, so that a shadow (the wall's colour, darker)
    stays background; a threshold adapted to the frame's noise (median + 5 MAD of the
    distortion) and to the plate's local texture (a misregistered texture edge must differ by
    more); then morphological opening and closing, hole filling and the largest connected
    component (the head and shoulders are one blob).
``mediapipe``
    MediaPipe's selfie segmentation (general model, 256 x 256), which ships inside the
    ``mediapipe`` pip package (extra ``landmarks``): no background plate, no download at run
    time. MediaPipe's hair segmentation model is not in the package (MediaPipe Tasks fetch
    it at run time) and so is not offered.
``rvm:<weights.pth>``
    Robust Video Matting (Lin et al. 2022), MobileNetV3 variant, with user-supplied weights
    (``rvm_mobilenetv3.pth`` from PeterL1n/RobustVideoMatting's releases); recurrent over the
    frames given to one :class:`Matter`. No plate needed.
``bgmv2:<weights.pth>``
    BackgroundMattingV2 (Lin et al. 2021) ``MattingRefine`` with user-supplied weights
    (MobileNetV2, ResNet-50 or ResNet-101, told apart by the state_dict's keys); needs the
    plate. The networks are in :mod:`.matting_nets`.

Alpha is float32 in [0, 1], ``(H, W)`` per frame; the capture readers store masks as uint8
(``round(255 alpha)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .matting_spec import METHODS, NEEDS_PLATE, NEEDS_WEIGHTS, MattingError, check_specs, parse_matting

__all__ = ["MattingError", "METHODS", "parse_matting", "check_specs", "matte", "make_matter", "Matter",
           "robust_background_alpha", "mediapipe_alpha", "iou", "foreground_mask", "MASK_THRESHOLD"]

# Fixed-threshold background subtraction (the ``threshold`` method): a pixel is foreground when
# its largest per-channel absolute difference to the background exceeds this (0..1 scale).
# 0.08 (about 20/255) sits above H.264 noise on static backgrounds and below skin-to-grey-wall
# contrast.
MASK_THRESHOLD = 0.08


def foreground_mask(image: np.ndarray, background: np.ndarray, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Foreground mask ``(..., H, W)`` bool by background subtraction (the ``threshold`` method).

    A pixel is foreground when ``max_c |image - background| > threshold`` (0..1 scale);
    see :data:`MASK_THRESHOLD` for the default.
    """
    if image.dtype == np.uint8 and background.dtype == np.uint8:  # integer maths: no float copy of the frame
        d = np.abs(image.astype(np.int16) - background.astype(np.int16)).max(-1)
        return d > threshold * 255.0
    a = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    b = background.astype(np.float32) / (255.0 if background.dtype == np.uint8 else 1.0)
    return np.abs(a - b).max(-1) > threshold


def _float(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else np.asarray(img, dtype=np.float32)


def _box(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a ``(2r+1)^2`` window per channel (edges reflected)."""
    from scipy import ndimage  # here: the configs validate specs without loading scipy

    size = (2 * r + 1, 2 * r + 1) + (1,) * (x.ndim - 2)
    return ndimage.uniform_filter(x, size=size, mode="reflect")


def robust_background_alpha(frame: np.ndarray, background: np.ndarray, k_mad: float = 5.0, floor: float = 0.045,
                            shadow_ratio: tuple[float, float] = (0.35, 1.08), largest_only: bool = True) -> np.ndarray:
    """Foreground alpha ``(H, W)`` float32 of one frame by shadow- and texture-aware background
    subtraction (the ``background`` method; see the module docstring).

    Args:
        frame, background: ``(H, W, 3)`` uint8 or float in [0, 1], sRGB, same size.
        k_mad: the adaptive threshold's multiple of the distortion's MAD (robust sigma).
        floor: lowest threshold on the 0..1 scale (about 11/255: above H.264 noise).
        shadow_ratio: brightness ratios ``<f, b> / <b, b>`` that may be shadow (or gain
            drift) when the chromatic distortion is small.
        largest_only: keep only the largest connected component.

    Returns:
        ``(H, W)`` float32: 1 inside, 0 outside, soft on the edge (:func:`_edge_alpha`).
    """
    from scipy import ndimage

    f, b = _float(frame), _float(background)
    bb = (b * b).sum(-1) + 1e-4
    ratio = (f * b).sum(-1) / bb  # Horprasert's brightness distortion
    chroma = np.linalg.norm(f - ratio[..., None] * b, axis=-1)  # colour off the wall's colour line
    full = np.abs(f - b).max(-1)
    in_band = (ratio > shadow_ratio[0]) & (ratio < shadow_ratio[1])
    # inside the shadow band only the colour counts (darker wall = shadow); outside, any change
    # a 3 x 3 median: compression noise and jitter away, edges kept in place (a mean would grow the mask)
    d = ndimage.median_filter(np.where(in_band, chroma * 1.5, full), size=3, mode="nearest")
    med = float(np.median(d))
    mad = float(np.median(np.abs(d - med))) * 1.4826
    texture = _box(np.abs(np.gradient(b.mean(-1))[0]) + np.abs(np.gradient(b.mean(-1))[1]), 1)
    thr = np.maximum(floor, med + k_mad * mad) + 0.5 * texture
    fg = d > thr
    fg = ndimage.binary_opening(fg, iterations=1)
    fg = ndimage.binary_closing(fg, structure=np.ones((3, 3)), iterations=2, border_value=0)
    fg = ndimage.binary_fill_holes(fg)
    if largest_only and fg.any():
        lab, n = ndimage.label(fg)
        if n > 1:
            sizes = ndimage.sum_labels(fg, lab, index=np.arange(1, n + 1))
            fg = lab == 1 + int(np.argmax(sizes))
    return _edge_alpha(f, b, fg)


def _edge_alpha(f: np.ndarray, b: np.ndarray, fg: np.ndarray, band: int = 2) -> np.ndarray:
    """Soft alpha on the mask's edge: a pixel there mixes the plate ``b`` with the nearby
    inside colour ``F`` (mean of the eroded mask within ``band + 1`` pixels), so alpha is
    the projection ``<f - b, F - b> / |F - b|^2`` (the compositing equation solved along
    ``F - b``); 1 inside, 0 outside, 1 on edge pixels without an inside colour nearby."""
    from scipy import ndimage

    inner = ndimage.binary_erosion(fg, iterations=band, border_value=0)
    w = _box(inner.astype(np.float32), band + 1)
    F = _box(f * inner[..., None], band + 1) / np.maximum(w, 1e-6)[..., None]
    fb = F - b
    proj = ((f - b) * fb).sum(-1) / np.maximum((fb * fb).sum(-1), 1e-4)
    edge = fg & ~inner
    alpha = fg.astype(np.float32)
    ok = edge & (w > 0.05) & ((fb * fb).sum(-1) > 0.01)  # a colour to mix with, far enough from the plate's
    alpha[ok] = np.clip(proj[ok], 0, 1)
    return alpha


class Matter:
    """A matting method ready to run (networks loaded once): call it per frame in time order.

    Args:
        method: one of :data:`METHODS`.
        weights: local weights file for ``rvm`` / ``bgmv2``.
        device: torch device of the networks.

    Raises:
        MattingError: see :func:`parse_matting`; unreadable or mismatched weights; the
            ``mediapipe`` extra missing.
    """

    def __init__(self, method: str, weights: str | Path | None = None, device: str = "cpu") -> None:
        if method not in METHODS or (method in NEEDS_WEIGHTS and weights is None):
            parse_matting(method)  # raises the spec's one-line error
        self.method, self.weights, self.device = method, weights, device
        self._net, self._state = None, None
        if method == "mediapipe":
            try:
                import mediapipe as mp
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise MattingError("matting: mediapipe needs the optional extra: pip install 'pointillist[landmarks]'") \
                    from e
            self._net = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        elif method in NEEDS_WEIGHTS:
            from .matting_nets import load_bgmv2, load_rvm

            self._net = (load_rvm if method == "rvm" else load_bgmv2)(weights, device)

    @property
    def needs_background(self) -> bool:
        """Whether the method needs the background plate."""
        return self.method in NEEDS_PLATE

    def reset(self) -> None:
        """Forget the recurrent state (RVM): the next frame starts a new clip."""
        self._state = None

    def __call__(self, frame: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
        """Alpha ``(H, W)`` float32 in [0, 1] of one ``(H, W, 3)`` uint8 (or [0, 1] float) frame.

        Raises:
            MattingError: no ``background`` for a method that needs one, or a plate of
                another size than the frame.
        """
        if self.needs_background:
            if background is None:
                raise MattingError(f"matting: {self.method} needs the background plate (none given)")
            if background.shape[:2] != frame.shape[:2]:
                raise MattingError(f"matting: background {background.shape[:2]} and frame {frame.shape[:2]} differ in size")
        if self.method == "threshold":
            return foreground_mask(frame, background).astype(np.float32)
        if self.method == "background":
            return robust_background_alpha(frame, background)
        if self.method == "mediapipe":
            rgb = frame if frame.dtype == np.uint8 else np.clip(np.round(np.asarray(frame) * 255), 0, 255).astype(np.uint8)
            return mediapipe_alpha(self._net, rgb)
        import torch

        src = torch.from_numpy(_float(frame)).permute(2, 0, 1)[None].to(self.device)
        with torch.no_grad():
            if self.method == "rvm":
                pha, self._state = self._net.alpha(src, self._state)
            else:
                bgr = torch.from_numpy(_float(background)).permute(2, 0, 1)[None].to(self.device)
                pha = self._net.alpha(src, bgr)
        return pha[0, 0].clamp(0, 1).cpu().numpy().astype(np.float32)


def mediapipe_alpha(segmenter, rgb: np.ndarray) -> np.ndarray:
    """Alpha ``(H, W)`` float32 in [0, 1] of MediaPipe's selfie segmentation on an
    ``(H, W, 3)`` uint8 RGB frame, padded to a square first.

    The solution's graph (``selfie_segmentation_cpu``: ``ImageToTensorCalculator`` with
    ``keep_aspect_ratio: false``) stretches any frame to the model's 256 x 256 input, so a
    portrait frame's head came out 1.45x too wide and the model missed it (IoU 0.49 mean, 0.0
    on 2 of the 16 cameras of the synthetic capture at 110 x 160; 0.84 mean padded): the
    frame is padded to a square by repeating its edge pixels (a black border reads as a
    dark object), segmented, and the mask cropped back.
    """
    h, w = rgb.shape[:2]
    side = max(h, w)
    y0, x0 = (side - h) // 2, (side - w) // 2
    sq = np.pad(rgb, ((y0, side - h - y0), (x0, side - w - x0), (0, 0)), mode="edge") if side != min(h, w) else rgb
    m = segmenter.process(np.ascontiguousarray(sq)).segmentation_mask[y0:y0 + h, x0:x0 + w]
    return np.clip(m, 0, 1).astype(np.float32)


def make_matter(spec: str, device: str = "cpu") -> Matter:
    """The :class:`Matter` of a spec string (``background``, ``rvm:/w/rvm.pth``...)."""
    method, weights = parse_matting(spec)
    return Matter(method, weights, device)


def matte(frames: np.ndarray, method: str = "background", background: np.ndarray | None = None,
          weights: str | Path | None = None, device: str = "cpu") -> np.ndarray:
    """Foreground alpha of one frame or a clip.

    Args:
        frames: ``(H, W, 3)`` or ``(T, H, W, 3)`` uint8 (or float in [0, 1]) sRGB frames of
            one camera, in time order (RVM carries its recurrent state along them).
        method: one of :data:`METHODS`.
        background: ``(H, W, 3)`` plate of the empty scene (``threshold``, ``background``,
            ``bgmv2``).
        weights: local weights file (``rvm``, ``bgmv2``); never downloaded.
        device: torch device of the networks.

    Returns:
        ``(H, W)`` or ``(T, H, W)`` float32 alpha in [0, 1].

    Raises:
        MattingError: unknown method, missing weights or plate (one line naming it).
    """
    m = Matter(method, weights, device)
    clip = np.asarray(frames)
    one = clip.ndim == 3
    out = np.stack([m(f, background) for f in (clip[None] if one else clip)])
    return out[0] if one else out


def iou(alpha: np.ndarray, truth: np.ndarray, level: float = 0.5) -> float:
    """Intersection over union of ``alpha > level`` and ``truth > level`` (any equal shapes);
    1.0 when both are empty."""
    a, t = np.asarray(alpha) > level, np.asarray(truth) > level
    union = (a | t).sum()
    return float((a & t).sum() / union) if union else 1.0
