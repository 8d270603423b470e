"""Portrait -> animated Gaussian avatar (``pointillist avatar``).

Single-image FLAME fit (:mod:`pointillist_data.tracking.single_image`, the identity shape) ->
AR generation of the canonical point cloud with bindings and its hidden states
(:func:`pointillist_model.generate.sample_points`) -> the Gaussian decoder -> outputs:

* ``point_cloud.ply``: GaussianAvatars' format (positions, log-scales and rotations local to
  the bound face of the canonical mesh, opacity logit, SH DC colour, ``binding_0``) with
  ``flame_param.npz`` beside it (the avatar's shape, the motion or one neutral frame,
  zero static and dynamic offsets), so GaussianAvatars loads it unchanged;
* ``turntable.mp4`` and ``turntable.png``: the canonical avatar from a camera circling it;
* with a motion (VHAP-style ``PARAMS.npz``, e.g. from ``pointillist track --video``):
  ``reenactment.mp4`` and ``reenactment.png``, the avatar driven by the motion's expression,
  jaw, neck, eyes and head pose (relative to its first frame, seen by a frontal camera), beside
  its driver: the driving FLAME mesh (the motion's own shape), or the driver's own frames when
  given (:func:`write_avatar`), as ``pointillist animate`` shows them
  (:mod:`pointillist_data.reenactment.render`).

Each step reports to a :class:`~pointillist_data.progress.Progress` (the single-image fit's
passes, the generated tokens, one step per rendered frame).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from pointillist_data.animation import Animator
from pointillist_data.flame.asset import FlameAsset
from pointillist_data.flame.frames import global_to_local
from pointillist_data.flame.model import FlameModel
from pointillist_data.flame.params import N_EXPR, FlameParams
from pointillist_data.gaussians import BoundGaussians, write_ply
from pointillist_data.progress import NULL_PROGRESS, Progress, Task
from pointillist_data.render import render_gaussians
from pointillist_data.render.sh import rgb_to_sh
from pointillist_data.tokens import QuantBox, decode
from pointillist_data.viz import contact_sheet, default_K, look_at_viewmat, save_png

from .config import AvatarConfig
from .decoder import DecodedGaussians, GaussianDecoder, flame_vertex_binding
from .decoder_train import load_decoder
from .train import flame_vertices_for_shapes, load_model
from .trainer_base import load_checkpoint

__all__ = ["AvatarConfig", "Avatar", "decode_avatar", "avatar_from_portrait", "write_avatar", "to_bound_gaussians",
           "render_avatar"]


class Avatar(NamedTuple):
    """A decoded avatar: canonical ``gaussians`` ``(1, N, ...)``, ``binding (N,)`` int64, its
    FLAME ``animator`` (the identity's shape) and ``shape (300,)``."""

    gaussians: DecodedGaussians
    binding: torch.Tensor
    animator: Animator
    shape: np.ndarray


@torch.no_grad()
def decode_avatar(decoder: GaussianDecoder, points: torch.Tensor, binding: torch.Tensor, hidden: torch.Tensor | None,
                  cond: torch.Tensor, animator: Animator, shape: np.ndarray) -> Avatar:
    """Run the decoder on one cloud: ``points (N, 3)``, ``binding (N,)``, ``hidden (N, 4, dim)``
    or ``None``, ``cond (M, dim)``."""
    g = decoder(points[None].float(), None if hidden is None else hidden[None].float(), cond[None].float())
    return Avatar(DecodedGaussians(*(t.float() for t in g)), binding.long(), animator, np.asarray(shape, np.float32))


def avatar_from_portrait(image: np.ndarray, decoder_checkpoint: str | Path, asset: FlameAsset,
                         config: AvatarConfig | None = None, identity: FlameParams | None = None,
                         ar_checkpoint: str | Path | None = None,
                         progress: Progress | None = None) -> tuple[Avatar, dict[str, Any]]:
    """Portrait -> :class:`Avatar`.

    ``image``: ``(H, W)`` or ``(H, W, 1..4)`` (grey, RGB, RGBA; uint8, uint16 or float), the whole
    frame: the FLAME shape is fitted to it, and the AR model is conditioned on it as prepared by
    :func:`~pointillist_model.portrait.conditioning_portrait` (the one preparation that
    ``generate-points`` and ``evaluate`` use too).

    Args:
        decoder_checkpoint: from ``train-decoder``; it names its AR checkpoint.
        identity: FLAME parameters whose ``shape`` replaces the single-image fit.
        ar_checkpoint: the AR checkpoint (default: the one the decoder was trained with).
        progress: reporter of the single-image fit and the AR sampling.

    Returns:
        The avatar and a summary (points, shape source, checkpoints).
    """
    from .generate import sample_points
    from .portrait import conditioning_portrait, identity_shape_from_portrait

    cfg = config or AvatarConfig()
    dev = cfg.device
    decoder, meta = load_decoder(decoder_checkpoint, dev)
    ar_path = ar_checkpoint or meta["ar_checkpoint"]
    ar_state = load_checkpoint(ar_path)
    ar = load_model(ar_state, dev)
    box = QuantBox.from_dict(meta["quant_box"])
    if identity is not None:
        shape, how = np.asarray(identity.shape, np.float32), "given"
    else:
        shape, how = identity_shape_from_portrait(image, asset, progress)
    shape = np.pad(np.asarray(shape, np.float32), (0, 300))[:300]
    crop = conditioning_portrait(image, ar_state)
    verts = flame_vertices_for_shapes(asset, shape[None]).to(dev)
    with torch.no_grad():
        ctx = ar.context(torch.as_tensor(np.array(crop), device=dev)[None], verts)
    animator = Animator(FlameModel(asset).to(dev), torch.as_tensor(shape, device=dev))
    if meta.get("points") == "flame":
        pts = animator.canonical_vertices.float()
        bind = torch.as_tensor(flame_vertex_binding(asset.faces, len(pts)), device=dev)
        hidden = None
    else:
        res = sample_points(ar, ctx, max_points=cfg.max_points, temperature=cfg.temperature, top_k=cfg.top_k,
                            top_p=cfg.top_p, greedy=False, generator=torch.Generator(dev).manual_seed(cfg.seed),
                            return_hidden=True, min_points=cfg.min_points, progress=progress)
        p, b = decode(res.tokens[0].cpu().numpy(), box, ar.config.vocab)
        pts = torch.as_tensor(p, dtype=torch.float32, device=dev)
        bind = torch.as_tensor(b, dtype=torch.long, device=dev)
        hidden = res.hidden[0].to(dev).reshape(len(p), 4, -1) if decoder.needs_features else None
    avatar = decode_avatar(decoder, pts, bind, hidden, ctx[0], animator, shape)
    return avatar, {"points": int(len(pts)), "degenerate": cfg.degenerate(pts.cpu().numpy(), asset.v_template),
                    "shape_source": how, "decoder_checkpoint": str(decoder_checkpoint),
                    "ar_checkpoint": str(ar_path), "animation": cfg.animation or meta.get("animation") or "barycentric",
                    "decoder_step": meta.get("step")}


def to_bound_gaussians(avatar: Avatar) -> BoundGaussians:
    """GaussianAvatars' representation: everything local to the bound canonical face."""
    g = avatar.gaussians
    mu, ls, q = global_to_local(avatar.animator.canonical_frames, avatar.binding, g.means[0], g.scales[0], g.quats[0])
    op = g.opacity[0].clamp(1e-6, 1 - 1e-6)
    return BoundGaussians.from_torch({"xyz": mu, "log_scale": ls, "rotation": q / q.norm(dim=-1, keepdim=True),
                                      "opacity_logit": torch.log(op / (1 - op)), "sh": rgb_to_sh(g.rgb[0])[:, None],
                                      "binding": avatar.binding})


@torch.no_grad()
def render_avatar(avatar: Avatar, params: FlameParams | dict, viewmats: torch.Tensor, K: torch.Tensor, size: int,
                  background: float = 1.0, mode: str = "barycentric", chunk: int = 8,
                  task: Task | None = None) -> np.ndarray:
    """Frames ``(T, size, size, 3)`` uint8: timestep ``t`` of ``params`` seen by camera ``t``
    (``viewmats (T, 4, 4)``, ``K (3, 3)``); ``task`` advances by one per frame."""
    g = avatar.gaussians
    p = params.to_torch(g.means.device) if isinstance(params, FlameParams) else params
    T = viewmats.shape[0]
    frames = []
    for t0 in range(0, T, chunk):
        sl = {k: v[t0:t0 + chunk] for k, v in p.items() if k not in ("shape", "static_offset")}
        a = avatar.animator.animate(g.means[0], avatar.binding, sl, g.scales[0], g.quats[0], mode)
        for j in range(a.means.shape[0]):
            r = render_gaussians(a.means[j], a.quats[j], a.scales[j], g.opacity[0], g.rgb[0], viewmats[t0 + j:t0 + j + 1],
                                 K[None], size, size, torch.full((1, 3), background, device=g.means.device))
            frames.append((r.rgb[0].clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8))
            if task is not None:
                task.advance()
    return np.stack(frames)


def banner(frames: np.ndarray, text: str) -> np.ndarray:
    """``frames (T, H, W, 3)`` uint8 with ``text`` in white on a black band across the top
    (wrapped to the width; PIL's built-in bitmap font, about 6 px per character)."""
    import textwrap

    from PIL import Image, ImageDraw

    out = []
    lines = textwrap.wrap(text, max(8, frames.shape[2] // 6 - 1))
    for f in frames:
        im = Image.fromarray(np.ascontiguousarray(f))
        d = ImageDraw.Draw(im)
        d.rectangle((0, 0, im.width, 11 * len(lines) + 2), fill=(0, 0, 0))
        for k, line in enumerate(lines):
            d.text((2, 1 + 11 * k), line, fill=(255, 255, 255))
        out.append(np.asarray(im))
    return np.stack(out)


def _neutral(T: int, shape: np.ndarray, V: int) -> FlameParams:
    p = FlameParams.zeros(T, num_vertices=V)
    p.shape = shape
    return p


def write_avatar(avatar: Avatar, out: str | Path, asset: FlameAsset, config: AvatarConfig | None = None,
                 motion: FlameParams | None = None, mode: str = "barycentric",
                 progress: Progress | None = None, driver_frames: np.ndarray | None = None) -> dict[str, str]:
    """Write the PLY (+ ``flame_param.npz``), the turntable and, with ``motion``, the reenactment:
    driver | avatar per frame (``reenactment.mp4``, and ``reenactment.png`` with up to 8 frames),
    the driver being ``driver_frames`` (``(T, H, W, 3)`` uint8, the motion's source video; resized
    to the avatar's square frames) or else the driving FLAME mesh seen like the avatar.

    Raises:
        ValueError: ``driver_frames`` of another frame count than ``motion``.

    Returns:
        ``{name: path}`` of the files written.
    """
    from pointillist_data.capture.video import write_video

    cfg = config or AvatarConfig()
    progress = progress or NULL_PROGRESS
    if driver_frames is not None and (motion is None or len(driver_frames) != motion.num_frames):
        raise ValueError(f"write_avatar: {len(driver_frames)} driver frames for a motion of "
                         f"{0 if motion is None else motion.num_frames}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    V = asset.num_vertices
    files = {"ply": str(write_ply(to_bound_gaussians(avatar), out / "point_cloud.ply", asset.num_faces))}
    fp = motion.frame(slice(None)) if motion is not None else _neutral(1, avatar.shape, V)
    fp.shape, fp.static_offset = avatar.shape, np.zeros((1, V, 3), np.float32)
    # VHAP / GaussianAvatars store 100 coefficients; a motion mapped to a smaller head model is padded back
    fp.expr = np.pad(fp.expr, ((0, 0), (0, max(0, N_EXPR - fp.expr.shape[1]))))
    fp.dynamic_offset = np.zeros((fp.num_frames, V, 3), np.float32)  # GaussianAvatars reads it
    files["flame_param"] = str(fp.save(out / "flame_param.npz"))
    dev = avatar.gaussians.means.device
    pts = avatar.gaussians.means[0]
    centre = pts.median(0).values.cpu().numpy().astype(np.float64)
    extent = float((pts.max(0).values - pts.min(0).values).max())
    dist = 0.5 * 1.25 * extent / math.tan(math.radians(cfg.fov_deg) / 2)
    K = torch.as_tensor(default_K(cfg.size, cfg.size, cfg.fov_deg), dtype=torch.float32, device=dev)
    n = cfg.turntable_frames
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    vm = torch.as_tensor(np.stack([look_at_viewmat(centre + dist * np.array([np.sin(a), 0.0, np.cos(a)]), centre)
                                   for a in ang]), dtype=torch.float32, device=dev)
    with progress.task("turntable", total=n) as task:
        frames = render_avatar(avatar, _neutral(n, avatar.shape, V), vm, K, cfg.size, cfg.background, mode, task=task)
    degenerate = cfg.degenerate(pts.cpu().numpy(), asset.v_template)
    if degenerate:  # say so on every frame rather than leave a blank turntable to explain
        frames = banner(frames, degenerate)
    files["turntable_mp4"] = str(write_video(out / "turntable.mp4", frames, fps=cfg.fps))
    pick = np.linspace(0, n - 1, min(n, 8)).round().astype(int)
    files["turntable_png"] = str(save_png(contact_sheet(list(frames[pick]), cols=len(pick)), out / "turntable.png"))
    if motion is not None:
        files.update(_reenactment(avatar, motion, asset, cfg, mode, K, centre, dist, out, progress, driver_frames))
    cfg.save(out / "avatar_config.json")
    return files


def _reenactment(avatar: Avatar, motion: FlameParams, asset: FlameAsset, cfg: AvatarConfig, mode: str,
                 K: torch.Tensor, centre: np.ndarray, dist: float, out: Path, progress: Progress,
                 driver_frames: np.ndarray | None) -> dict[str, str]:
    from PIL import Image

    from pointillist_data.reenactment.render import (
        follow_view,
        render_driver,
        side_by_side,
        write_reenactment,
    )

    T, dev = motion.num_frames, avatar.gaussians.means.device
    p = motion.to_torch(dev)
    first = {k: v[:1] for k, v in p.items() if k not in ("shape", "static_offset", "dynamic_offset")}
    # the camera follows the head's pose at frame 0, so frame 0 is seen frontally
    view = follow_view(avatar.animator, first, centre, dist)
    with progress.task("reenactment: avatar", total=T) as task:
        frames = render_avatar(avatar, p, view[None].expand(T, -1, -1), K, cfg.size, cfg.background, mode, task=task)
    if driver_frames is not None:
        s = cfg.size
        left = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(f[..., :3])).resize((s, s))) for f in driver_frames])
    else:  # the driving mesh with its own shape, framed like the avatar
        with progress.task("reenactment: driver mesh", total=T) as task:
            dan = Animator(FlameModel(asset).to(dev), torch.as_tensor(np.asarray(motion.shape, np.float32), device=dev),
                           None if motion.static_offset is None else torch.as_tensor(motion.static_offset, device=dev))
            dview = follow_view(dan, first, dan.canonical_vertices.median(0).values.double().cpu().numpy(), dist)
            left = render_driver(asset, motion, dview, K.double().cpu().numpy(), cfg.size, cfg.background)
            task.advance(T)
    return write_reenactment(side_by_side(left, frames), out, fps=cfg.fps)
