"""An existing avatar driven by a FLAME motion, rendered beside its driver.

Avatar folders (:func:`load_avatar_folder`):

* the toolkit's ``fit`` stage output or ``pointillist avatar`` output: ``point_cloud.ply``
  (GaussianAvatars' PLY, Gaussians local to their bound faces) with ``flame_param.npz``
  beside it (the identity: ``shape``, ``static_offset``); an ``avatar.json`` records the
  animation mode its decoder was trained with;
* a GaussianAvatars output folder: ``point_cloud/iteration_<N>/point_cloud.ply`` (largest
  ``N``, as GaussianAvatars' ``searchForMaxIteration``) with its ``flame_param.npz``.

The avatar keeps its identity (shape, static offset); the motion supplies expression, jaw,
neck, eyes, head rotation and translation (:class:`pointillist_data.animation.Animator`).
The driver panel is the driving FLAME mesh itself - the motion's own shape, offsets and
parameters - drawn shaded (:func:`pointillist_data.viz.draw_mesh`). Both cameras follow the
head's pose at the first frame, so frame 0 is seen frontally and later head motion shows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..animation import MODES, Animator
from ..flame.asset import FlameAsset
from ..flame.model import FlameModel
from ..flame.params import FlameParams
from ..gaussians import BoundGaussians, read_ply
from ..interop.common import InteropError, fit_to_head_model
from ..interop.gaussian_avatars import find_gaussian_avatars_ply
from ..progress import NULL_PROGRESS, Progress
from ..render import render_gaussians
from ..viz import contact_sheet, default_K, draw_mesh, draw_text, look_at_viewmat, save_png
from .config import AnimateConfig

__all__ = ["AvatarFolder", "Reenactment", "load_avatar_folder", "follow_view", "render_driver",
           "render_bound_avatar", "side_by_side", "reenact", "write_reenactment"]


class AvatarFolder(NamedTuple):
    """An avatar read from disk.

    Attributes:
        gaussians: the PLY's Gaussians, local to their bound faces (any SH degree).
        identity: its ``flame_param.npz`` (``shape``, ``static_offset`` are used).
        ply: the PLY read.
        animation: the animation mode it was made for (``face_frame`` unless an
            ``avatar.json`` records another).
    """

    gaussians: BoundGaussians
    identity: FlameParams
    ply: Path
    animation: str


def load_avatar_folder(folder: str | Path, asset: FlameAsset) -> AvatarFolder:
    """Read an avatar folder (see the module docstring).

    Raises:
        FileNotFoundError: no such folder.
        InteropError: no PLY, or no ``flame_param.npz`` beside it (the folder named).
        GaussianPlyError, FlameParamsError: a damaged PLY or parameter file (the file named).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: avatar folder not found")
    ply = find_gaussian_avatars_ply(folder)
    flame = ply.parent / "flame_param.npz"
    if not flame.is_file():
        raise InteropError(f"{ply.parent}: no flame_param.npz beside {ply.name} (the avatar's identity)")
    identity, _ = fit_to_head_model(FlameParams.load(flame), asset.num_vertices, str(flame))
    g = read_ply(ply, asset.num_faces)
    mode = "face_frame"
    meta = folder / "avatar.json"
    if meta.is_file():
        try:
            recorded = json.loads(meta.read_text()).get("animation")
        except (json.JSONDecodeError, AttributeError):
            raise InteropError(f"{meta}: not a JSON object (pointillist avatar writes one)") from None
        if recorded in MODES:
            mode = recorded
    return AvatarFolder(g, identity, ply, mode)


def _animator(asset: FlameAsset, p: FlameParams, device: torch.device) -> Animator:
    so = None if p.static_offset is None else torch.as_tensor(p.static_offset, device=device)
    return Animator(FlameModel(asset).to(device), torch.as_tensor(p.shape, device=device), so)


def _pose_params(p: FlameParams, device: torch.device, sl: slice = slice(None)) -> dict[str, torch.Tensor]:
    """The motion's per-frame parameters only (expression and pose): the animated identity keeps
    its own shape and offsets."""
    return {k: torch.as_tensor(getattr(p, k)[sl], dtype=torch.float32, device=device)
            for k in ("expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation")}


def follow_view(animator: Animator, first: dict[str, torch.Tensor], centre: np.ndarray, dist: float) -> torch.Tensor:
    """World-to-camera ``(4, 4)`` float32 of a frontal camera at ``dist`` metres from the
    canonical ``centre``, moved with the head's rigid pose (root joint and translation) at the
    motion's first frame ``first`` (``(1, d)`` tensors)."""
    m0 = animator.motion(first)
    M0 = m0.transforms[0, 0].double().clone()
    M0[:3, 3] += m0.translation[0].double()
    front = torch.as_tensor(look_at_viewmat(centre + np.array([0.0, 0.0, dist]), centre), device=M0.device)
    return (front @ torch.linalg.inv(M0)).float()


@torch.no_grad()
def render_driver(asset: FlameAsset, motion: FlameParams, view: torch.Tensor, K: np.ndarray, size: int,
                  background: float = 1.0, chunk: int = 16) -> np.ndarray:
    """The driving FLAME mesh (the motion's shape, offsets and parameters), Lambert-shaded:
    ``(T, size, size, 3)`` uint8 seen by ``view (4, 4)``."""
    dev = view.device
    an = _animator(asset, motion, dev)
    faces = asset.faces
    bg = np.full((size, size, 3), round(background * 255), np.uint8)
    vm = view.double().cpu().numpy()
    out = []
    for t0 in range(0, motion.num_frames, chunk):
        sl = slice(t0, t0 + chunk)
        p = _pose_params(motion, dev, sl)
        if motion.dynamic_offset is not None:
            p["dynamic_offset"] = torch.as_tensor(motion.dynamic_offset[sl], dtype=torch.float32, device=dev)
        for v in an.motion(p).vertices.double().cpu().numpy():
            out.append(draw_mesh(v, faces, vm, K, size, size, background=bg))
    return np.stack(out)


@torch.no_grad()
def render_bound_avatar(animator: Animator, g: BoundGaussians, motion: FlameParams, view: torch.Tensor,
                        K: torch.Tensor, size: int, mode: str, background: float = 1.0,
                        chunk: int = 8) -> np.ndarray:
    """The avatar driven by ``motion``'s expression and pose: ``(T, size, size, 3)`` uint8.

    The PLY's local Gaussians are placed on the canonical mesh of ``animator`` (the avatar's
    identity), animated in ``mode`` and rendered with their SH colours (evaluated in world
    space, as GaussianAvatars does) by ``view (4, 4)`` and ``K (3, 3)``.
    """
    dev = view.device
    can = g.to_global(animator.canonical_frames)
    binding = torch.as_tensor(g.binding, dtype=torch.long, device=dev)
    sh = can["sh"].to(dev)
    bg = torch.full((1, 3), float(background), device=dev)
    frames = []
    for t0 in range(0, motion.num_frames, chunk):
        a = animator.animate(can["means"], binding, _pose_params(motion, dev, slice(t0, t0 + chunk)), can["scales"],
                             can["quats"], mode)
        for j in range(a.means.shape[0]):
            r = render_gaussians(a.means[j], a.quats[j], a.scales[j], can["opacities"], sh, view[None], K[None], size,
                                 size, bg, sh_degree=g.sh_degree)
            frames.append((r.rgb[0].clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8))
    return np.stack(frames)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` and ``(T, H, W', 3)`` uint8 -> ``(T, H, W + W', 3)`` (left | right)."""
    if left.shape[:2] != right.shape[:2]:
        raise ValueError(f"side_by_side: {left.shape} and {right.shape} differ in frames or height")
    return np.concatenate([left, right], axis=2)


class Reenactment(NamedTuple):
    """``frames (T, size, 2 size, 3)`` uint8, driver | avatar; ``mode`` the animation used."""

    frames: np.ndarray
    mode: str


def reenact(avatar: AvatarFolder, motion: FlameParams, asset: FlameAsset, config: AnimateConfig | None = None,
            device: str = "cpu", progress: Progress | None = None) -> Reenactment:
    """Drive ``avatar`` with ``motion`` (its expression count already the head model's,
    :func:`pointillist_data.interop.motion.read_motion`) and render driver | avatar.

    Raises:
        ValueError: an empty motion.
    """
    cfg = config or AnimateConfig()
    progress = progress or NULL_PROGRESS
    if motion.num_frames < 1:
        raise ValueError(f"{motion.source}: the motion has no frames")
    if cfg.max_frames is not None and motion.num_frames > cfg.max_frames:
        motion = motion.frame(slice(0, cfg.max_frames))
    mode = cfg.animation or avatar.animation
    dev = torch.device(device)
    an = _animator(asset, avatar.identity, dev)
    pts = avatar.gaussians.to_global(an.canonical_frames)["means"]
    centre = pts.median(0).values.double().cpu().numpy()
    extent = float((pts.max(0).values - pts.min(0).values).max())
    # the head fills 80 % of the panel (as the avatar command's cameras)
    dist = 0.5 * 1.25 * extent / math.tan(math.radians(cfg.fov_deg) / 2)
    Knp = default_K(cfg.size, cfg.size, cfg.fov_deg)
    K = torch.as_tensor(Knp, dtype=torch.float32, device=dev)
    T = motion.num_frames
    with progress.task("avatar", total=T) as task:
        view = follow_view(an, _pose_params(motion, dev, slice(0, 1)), centre, dist)
        right = render_bound_avatar(an, avatar.gaussians, motion, view, K, cfg.size, mode, cfg.background)
        task.advance(T)
    with progress.task("driver", total=T) as task:
        dan = _animator(asset, motion, dev)
        dcentre = dan.canonical_vertices.median(0).values.double().cpu().numpy()
        dview = follow_view(dan, _pose_params(motion, dev, slice(0, 1)), dcentre, dist)
        left = render_driver(asset, motion, dview, Knp, cfg.size, cfg.background)
        task.advance(T)
    return Reenactment(side_by_side(left, right), mode)


def write_reenactment(frames: np.ndarray, out: str | Path, fps: int = 25, stem: str = "reenactment") -> dict[str, str]:
    """Write ``<stem>.mp4`` (every frame) and ``<stem>.png`` (up to 8 frames evenly spaced,
    labelled with their index, two driver | avatar pairs a row), atomically.

    Returns:
        ``{"reenactment_mp4": path, "reenactment_png": path}``.
    """
    from ..capture.video import write_video

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    T, _, W2, _ = frames.shape
    pick = np.linspace(0, T - 1, min(T, 8)).round().astype(int)
    tiles = [draw_text(draw_text(frames[t], f"driver {t}", (3, 3)), "avatar", (W2 // 2 + 3, 3)) for t in pick]
    sheet = contact_sheet(tiles, cols=min(2, len(tiles)))
    return {"reenactment_mp4": str(write_video(out / f"{stem}.mp4", frames, fps=fps)),
            "reenactment_png": str(save_png(sheet, out / f"{stem}.png"))}
