"""Rendering a fitted or imported avatar for chosen cameras, timesteps or a motion
(``pointillist render``; GaussianAvatars' ``render.py``).

The avatar folder is read by :func:`pointillist_data.reenactment.render.load_avatar_folder`
(GaussianAvatars' representation, :class:`~pointillist_data.gaussians.BoundGaussians`: positions,
rotations and log-scales local to their bound FLAME face, with its ``flame_param.npz``). The
Gaussians are placed on the avatar's canonical mesh and animated to each timestep by
:class:`~pointillist_data.animation.Animator` in the avatar's animation mode (``face_frame``,
GaussianAvatars' own, unless an ``avatar.json`` records ``barycentric``), then
:func:`~pointillist_data.render.render_gaussians` draws them, with view-dependent colour (SH
evaluated in world space) when the PLY has coefficients beyond the DC term.

Cameras are an export's (OpenCV, from ``transforms.json``) or virtual ones that follow the
head: placed around its canonical centre and moved with its root-joint pose at the first
rendered timestep (:func:`head_viewmats`, the framing ``pointillist avatar`` uses), so a
frontal camera sees the face whatever the capture's world frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..animation import Animator
from ..errors import InputError
from ..flame.asset import FlameAsset
from ..flame.model import FlameModel
from ..flame.params import FlameParams
from ..gaussians import BoundGaussians
from ..progress import NULL_PROGRESS, Progress
from .api import render_gaussians

__all__ = ["drive", "head_viewmats", "RenderCameras", "export_cameras", "virtual_cameras", "render_frames",
           "render_fitted"]


def drive(avatar: FlameParams, motion: FlameParams | None, timesteps: list[int] | None,
          where: str = "--timesteps") -> tuple[FlameParams, list[int]]:
    """The FLAME parameters to render: ``motion``'s expression, jaw, neck, eyes, head pose and
    translation with the avatar's shape and static offset (no dynamic offsets), or the avatar's
    own parameters, at ``timesteps`` (all when ``None``). Returns them and the indices.

    Raises:
        InputError: a timestep outside the parameters' (``where`` named).
    """
    src = motion if motion is not None else avatar
    T = src.num_frames
    idx = list(range(T)) if timesteps is None else [int(t) for t in timesteps]
    bad = [t for t in idx if not 0 <= t < T]
    if bad:
        raise InputError(where, f"timestep(s) {bad} outside the {T} of the "
                                f"{'motion' if motion is not None else 'avatar'}'s FLAME parameters (0..{T - 1})")
    p = src.frame(np.asarray(idx, np.int64))
    p.shape = avatar.shape
    p.static_offset = avatar.static_offset
    if motion is not None:
        p.dynamic_offset = None
    return p, idx


def _animator(flame: FlameModel, identity: FlameParams) -> Animator:
    dev = flame.v_template.device
    so = None if identity.static_offset is None else torch.as_tensor(identity.static_offset, device=dev)
    return Animator(flame, torch.as_tensor(np.asarray(identity.shape, np.float32), device=dev), so)


def head_viewmats(flame: FlameModel, params: FlameParams, yaws: np.ndarray, fov_deg: float,
                  margin: float = 1.25) -> np.ndarray:
    """OpenCV world-to-camera ``(C, 4, 4)`` float64 of cameras around the head of ``params``'
    first timestep: at yaw ``yaws`` (radians, 0 = frontal) around the canonical head's centre,
    far enough for the head's extent times ``margin`` to fill the vertical field of view
    ``fov_deg``, then moved with the head's root pose (rotation about the root joint and
    translation) at that timestep."""
    from ..viz import look_at_viewmat

    dev = flame.v_template.device
    an = _animator(flame, params)
    cv = an.canonical_vertices.double().cpu().numpy()
    centre = np.median(cv, 0)
    extent = float((cv.max(0) - cv.min(0)).max())
    dist = 0.5 * margin * extent / math.tan(math.radians(fov_deg) / 2)
    p0 = {k: v[:1] for k, v in params.frame(slice(0, 1)).to_torch(dev).items() if k not in ("shape", "static_offset")}
    m0 = an.motion(p0)
    M0 = m0.transforms[0, 0].double().cpu().numpy().copy()
    M0[:3, 3] += m0.translation[0].double().cpu().numpy()
    return np.stack([look_at_viewmat(centre + dist * np.array([math.sin(a), 0.0, math.cos(a)]), centre)
                     @ np.linalg.inv(M0) for a in np.asarray(yaws, np.float64)])


@dataclass
class RenderCameras:
    """``names`` (C,), ``viewmats (C, 4, 4)`` OpenCV world-to-camera, ``Ks (C, 3, 3)`` pixels,
    one image size ``width x height`` (even)."""

    names: list[str]
    viewmats: np.ndarray
    Ks: np.ndarray
    width: int
    height: int


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def export_cameras(export: str | Path, select: list[str] | None = None, scale: float = 1.0) -> RenderCameras:
    """The cameras of a NeRF-style export (``transforms.json``; :func:`read_vhap_export`) chosen
    by ``camera_id`` or ``camera_index`` (all when ``None``), intrinsics scaled to ``scale`` of
    the image size (rounded to even sides, as H.264 needs).

    Raises:
        VhapExportError: no readable ``transforms.json``. InputError: a named camera that is not
            there, or cameras of different image sizes.
    """
    from ..capture.vhap_export import read_vhap_export

    cams: dict[int, object] = {}
    for f in read_vhap_export(export):
        cams.setdefault(f.camera_index, f.camera)
    order = sorted(cams)
    if select is not None:
        by_name = {str(cams[i].serial): i for i in order} | {str(i): i for i in order}
        missing = [s for s in select if s not in by_name]
        if missing:
            raise InputError("--cameras", f"{export}: no camera {', '.join(missing)} (have "
                                          f"{', '.join(str(cams[i].serial) for i in order)})")
        order = [by_name[s] for s in select]
    sizes = {(cams[i].width, cams[i].height) for i in order}
    if len(sizes) > 1:
        raise InputError("--cameras", f"{export}: cameras of different image sizes {sorted(sizes)}: render them "
                                      "separately")
    W, H = sizes.pop()
    w, h = _even(W * scale), _even(H * scale)
    Ks = np.stack([np.asarray(cams[i].K, np.float64) for i in order])
    Ks[:, 0] *= w / W
    Ks[:, 1] *= h / H
    return RenderCameras([str(cams[i].serial) for i in order], np.stack([cams[i].world_to_cam for i in order]), Ks, w, h)


def virtual_cameras(flame: FlameModel, params: FlameParams, views: int, size: int, fov_deg: float) -> RenderCameras:
    """``views`` square cameras evenly spaced in yaw around the head, the first frontal
    (:func:`head_viewmats`), named ``view0``, ``view1``, ..."""
    from ..viz import default_K

    yaws = np.linspace(0, 2 * np.pi, views, endpoint=False)
    K = default_K(size, size, fov_deg)
    return RenderCameras([f"view{i}" for i in range(views)], head_viewmats(flame, params, yaws, fov_deg),
                         np.repeat(K[None], views, 0), size, size)


@torch.no_grad()
def render_frames(g: BoundGaussians, params: FlameParams, flame: FlameModel, cams: RenderCameras,
                  mode: str = "face_frame", background: float = 1.0, progress: Progress | None = None):
    """Yield ``(t, frames (C, H, W, 3) uint8)`` for each timestep ``t`` of ``params``: the
    Gaussians on the canonical mesh of ``params``' identity (``shape``, ``static_offset``),
    animated in ``mode`` by its expression, pose and dynamic offsets and rendered into every camera.

    Raises:
        GaussianPlyError: a binding outside the FLAME model's faces.
    """
    progress = progress or NULL_PROGRESS
    dev = flame.v_template.device
    g.validate(int(flame.faces.shape[0]))
    an = _animator(flame, params)
    can = g.to_global(an.canonical_frames)
    binding = torch.as_tensor(g.binding, dtype=torch.long, device=dev)
    colours, degree = (can["sh"], g.sh_degree) if g.sh_degree > 0 else (can["rgb"], None)
    vm = torch.as_tensor(cams.viewmats, dtype=torch.float32, device=dev)
    Ks = torch.as_tensor(cams.Ks, dtype=torch.float32, device=dev)
    bg = torch.full((len(cams.names), 3), float(background), device=dev)
    T = params.num_frames
    with progress.task(f"rendering {T} timestep(s) x {len(cams.names)} camera(s)", total=T) as task:
        for t in range(T):
            a = an.animate(can["means"], binding, params.frame(t), can["scales"], can["quats"], mode)
            r = render_gaussians(a.means[0], a.quats[0], a.scales[0], can["opacities"], colours, vm, Ks, cams.width,
                                 cams.height, bg, sh_degree=degree)
            yield t, (r.rgb.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
            task.advance()


def render_fitted(cfg, asset: FlameAsset, progress: Progress | None = None) -> dict:
    """``pointillist render``: render the avatar of ``cfg.fit`` (a
    :class:`~pointillist_data.render_config.RenderConfig`) into ``cfg.out``:

    * ``frames/<camera>/<timestep:05d>.png`` for every camera and timestep;
    * ``<camera>.mp4`` per camera over the timesteps (when there are two or more);
    * ``render.png``: cameras in rows, up to 8 timesteps in columns, each tile labelled with
      camera and timestep;
    * ``render_config.json`` and ``render.json`` (what was rendered, relative file names, the
      motion reader's warnings).

    Every file is written through a temporary name and a rename. Returns the ``render.json``
    contents.

    Raises:
        InputError, InteropError, FlameParamsError, VhapExportError, FileNotFoundError: bad
        inputs (the file or option named), before anything is written.
    """
    import json

    from ..capture.video import VideoWriter
    from ..devices import resolve_device
    from ..fileio import atomic_write_text
    from ..interop.common import check_ranges
    from ..reenactment.render import load_avatar_folder
    from ..viz import contact_sheet, draw_text, save_png

    out = Path(cfg.out)
    dev = resolve_device(cfg.device).device
    av = load_avatar_folder(cfg.fit, asset)
    check_ranges(av.identity, str(av.ply.parent / "flame_param.npz"))
    motion, warnings = None, []
    if cfg.motion:  # the one motion reader of every command (VHAP, GaussianAvatars, LAM, folders)
        from ..interop.motion import read_motion

        read = read_motion(cfg.motion, asset.n_expr, asset.num_vertices)
        motion, warnings = read.params, list(read.warnings)
    params, idx = drive(av.identity, motion, cfg.timesteps)
    flame = FlameModel(asset).to(dev)
    cams = export_cameras(cfg.export, cfg.cameras, cfg.scale) if cfg.export else \
        virtual_cameras(flame, params, cfg.views, cfg.size, cfg.fov_deg)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "render_config.json")
    pick = set(np.linspace(0, len(idx) - 1, min(len(idx), 8)).round().astype(int).tolist())
    writers = [VideoWriter(out / f"{name}.mp4", cfg.fps) for name in cams.names] if len(idx) > 1 else []
    tiles: list[list[np.ndarray]] = [[] for _ in cams.names]
    try:
        for t, frames in render_frames(av.gaussians, params, flame, cams, av.animation, cfg.background, progress):
            for c, name in enumerate(cams.names):
                save_png(frames[c], out / "frames" / name / f"{idx[t]:05d}.png")
                if writers:
                    writers[c].write(frames[c])
                if t in pick:
                    tiles[c].append(draw_text(frames[c], f"{name} t{idx[t]}"))
    except BaseException:
        for w in writers:
            w.abort()
        raise
    videos = [str(w.close().relative_to(out)) for w in writers]
    cols = len(tiles[0])
    sheet = save_png(contact_sheet([t for row in tiles for t in row], cols=cols), out / "render.png")
    record = {"fit": str(av.ply), "motion": cfg.motion, "animation": av.animation, "cameras": cams.names, "timesteps": idx,
              "size": [cams.width, cams.height], "gaussians": len(av.gaussians), "sh_degree": av.gaussians.sh_degree,
              "frames": "frames/<camera>/<timestep:05d>.png", "videos": videos, "sheet": sheet.name,
              "warnings": warnings}
    atomic_write_text(out / "render.json", json.dumps(record, indent=1))
    return record
