"""A synthetic monocular clip with ground truth: the demo head in front of one video camera.

The head (a random identity's Gaussian appearance, :mod:`.appearance`) moves with the
synthetic capture's motion (:func:`.synthetic.synthetic_motion`) about 1 m in front of a
camera at the origin looking along +z (OpenCV: x right, y down), the camera
``pointillist track --video`` assumes, so the tracked parameters compare with the ground
truth directly. :func:`upscale_video` makes larger copies (1080p, 4K) of the same clip for
resolution benchmarks: the face's pixels grow, its content does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..flame.asset import FlameAsset
from ..flame.frames import face_frames
from ..flame.model import FlameModel
from ..flame.params import FlameParams
from ..render import render_gaussians
from .appearance import make_identity_gaussians
from .camera import Camera
from .landmarks_io import write_landmarks
from .synthetic import synthetic_motion
from .video import VideoWriter, iter_video, write_video

__all__ = ["SyntheticVideo", "make_synthetic_video", "upscale_video"]

# FLAME faces +z with y up; the OpenCV camera looks along +z with y down: turn the head by
# pi about x so that it faces the camera upright
_FACING_CAMERA = np.array([np.pi, 0.0, 0.0])


@dataclass
class SyntheticVideo:
    """What :func:`make_synthetic_video` wrote.

    Attributes:
        video: the mp4 (H.264, ``width x height``); landmarks: VHAP landmark npz of the
            iBUG-68 ground-truth landmarks (normalised, so valid at any resolution of the clip);
        params: ground-truth FLAME parameters ``(T, ...)`` in the camera's frame (metres);
        camera: the true camera (identity pose, focal ``focal`` pixels, centred principal point);
        background: ``background.png``, the empty scene (the background plate a
            ``background`` matting method needs, ``<stem>_background.png`` beside a video);
        alpha: ``alpha.npz`` with ``alpha (T, H, W)`` uint8 (0..255), the renderer's coverage:
            the ground truth that matting is scored against.
    """

    video: Path
    landmarks: Path
    params: FlameParams
    camera: Camera
    background: Path | None = None
    alpha: Path | None = None


def make_synthetic_video(out: str | Path, asset: FlameAsset, frames: int = 8, size: tuple[int, int] = (640, 360),
                         seed: int = 0, depth: float = 1.0, focal: float | None = None) -> SyntheticVideo:
    """Render the clip ``out/clip.mp4`` with ``out/landmarks.npz`` and ``out/flame_params.npz``.

    Args:
        frames: frame count; size: ``(width, height)`` (even); seed: identity and motion;
        depth: distance of the head's landmarks from the camera (metres); focal: focal length in
            pixels (default the larger side, what the tracker guesses).

    Raises:
        ValueError: an odd size (H.264).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    W, H = size
    f = float(focal or max(W, H))
    cam = Camera(np.eye(4), [[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]], W, H, "video")
    rng = np.random.default_rng(seed)
    shape = np.zeros(300, np.float32)
    shape[: asset.n_shape] = rng.normal(scale=0.8, size=asset.n_shape)
    m = synthetic_motion(frames, 100, rng)
    model = FlameModel(asset)
    rot = _FACING_CAMERA[None] + m["rotation"]
    base = FlameParams(rotation=rot, translation=np.zeros((frames, 3)), neck_pose=m["neck_pose"],
                       jaw_pose=m["jaw_pose"], eyes_pose=np.zeros((frames, 6)), shape=shape, expr=m["expr"],
                       timestep_id=np.array([f"{t:05d}" for t in range(frames)]))
    with torch.no_grad():
        lm0 = model.forward_params(base.to_torch())["landmarks_ibug68"][0].numpy().mean(0)
    base.translation = (np.array([0.0, 0.0, depth]) - lm0)[None] + m["translation"]
    gauss = make_identity_gaussians(asset, seed, shape[: asset.n_shape])
    vm = torch.eye(4)[None]
    Ks = torch.as_tensor(cam.K, dtype=torch.float32)[None]
    yy = np.linspace(0.45, 0.6, H, dtype=np.float32)[:, None, None]
    bg = np.broadcast_to(yy * np.array([1.0, 0.97, 0.92], np.float32), (H, W, 3))
    imgs, lmks, alphas = [], [], []
    with torch.no_grad():
        o = model.forward_params(base.to_torch())
        for t in range(frames):
            g = gauss.to_global(face_frames(o["vertices"][t], model.faces))
            r = render_gaussians(g["means"], g["quats"], g["scales"], g["opacities"], g["rgb"], vm, Ks, W, H)
            a = r.alpha[0].numpy()
            alphas.append((np.clip(a[..., 0], 0, 1) * 255 + 0.5).astype(np.uint8))
            imgs.append((np.clip(r.rgb[0].numpy() + (1 - a) * bg, 0, 1) * 255 + 0.5).astype(np.uint8))
            uv, _ = cam.project(o["landmarks_ibug68"][t].numpy().astype(np.float64))
            lmks.append(np.concatenate([uv, np.ones((len(uv), 1))], 1))
    video = write_video(out / "clip.mp4", np.stack(imgs))
    lm_path = write_landmarks(out / "landmarks.npz", np.stack(lmks).astype(np.float32), W, H)
    base.save(out / "flame_params.npz")
    Image.fromarray((bg * 255 + 0.5).astype(np.uint8)).save(out / "background.png")
    np.savez_compressed(out / "alpha.npz", alpha=np.stack(alphas))
    return SyntheticVideo(video, lm_path, base, cam, out / "background.png", out / "alpha.npz")


def upscale_video(src: str | Path, dst: str | Path, size: tuple[int, int]) -> Path:
    """Resize every frame of ``src`` to ``size = (width, height)`` (bicubic, one frame in memory
    at a time) into ``dst``, losslessly encoded so that the pixels stay those of the resize."""
    with VideoWriter(dst, crf=0, preset="ultrafast") as w:
        for _, fr in iter_video(src):
            w.write(np.asarray(Image.fromarray(fr).resize(tuple(size), Image.BICUBIC)))
    return Path(dst)
