"""Ground-truth renders of a synthetic capture under any identity's motion (issue 30 item 3).

A real capture has no picture of person A making person B's expression, so cross-reenactment
is scored without a reference image (identity and pose metrics only). The synthetic capture
(:mod:`.synthetic`) knows each identity's true Gaussians bound to FLAME
(``<pid>/ground_truth/point_cloud.ply``, its true shape in ``flame_param.npz``) and each
identity's true FLAME motion (``<pid>/ground_truth/<SEQ>/flame_params.npz``), so it can render
that picture: identity A's true Gaussians on A's true head shape, posed by B's true expression,
jaw, neck, eye and head pose at one of B's timesteps, through the same binding
(:meth:`~pointillist_data.gaussians.BoundGaussians.to_global` on
:func:`~pointillist_data.flame.frames.face_frames`) and renderer
(:func:`~pointillist_data.render.render_gaussians`) that rendered the capture. With A = B it
reproduces the capture's own frames (before the background and the video encoding).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..flame.asset import FlameAsset
from ..flame.frames import face_frames
from ..flame.model import FlameModel
from ..flame.params import FlameParams
from ..gaussians import BoundGaussians, read_ply
from ..render import render_gaussians

__all__ = ["SyntheticTruth", "MOTION_KEYS"]

#: The per-timestep FLAME fields the driver gives (everything but the identity shape).
MOTION_KEYS = ("expr", "jaw_pose", "neck_pose", "eyes_pose", "rotation", "translation")


class SyntheticTruth:
    """Renders identity A's ground truth driven by identity B's ground-truth motion.

    Args:
        capture: a synthetic capture folder (``capture.json``,
            :func:`~pointillist_data.capture.synthetic.make_synthetic_capture`).
        asset: its FLAME model.

    Raises:
        InputError: not a synthetic capture (no readable ``capture.json`` with a ``config``).
    """

    def __init__(self, capture: str | Path, asset: FlameAsset) -> None:
        self.root = Path(capture)
        try:
            self.summary = json.loads((self.root / "capture.json").read_text())
            self.sequence = str(self.summary["config"]["sequence"])
        except (OSError, ValueError, KeyError, TypeError):
            raise InputError(str(self.root), "not a synthetic capture (no readable capture.json with its config): "
                             "no ground truth to render") from None
        self.asset, self.model = asset, FlameModel(asset)
        self._gauss: dict[str, BoundGaussians] = {}
        self._params: dict[str, FlameParams] = {}

    @property
    def subjects(self) -> list[str]:
        return sorted(self.summary["participants"])

    def gaussians(self, subject: str) -> BoundGaussians:
        """The true Gaussians of ``subject`` (``point_cloud.ply``, read once)."""
        if subject not in self._gauss:
            rel = self._participant(subject)["ground_truth"]
            self._gauss[subject] = read_ply(self.root / rel, self.asset.num_faces)
        return self._gauss[subject]

    def motion(self, subject: str) -> FlameParams:
        """The true FLAME parameters of ``subject`` per timestep (``flame_params.npz``)."""
        if subject not in self._params:
            self._participant(subject)
            self._params[subject] = FlameParams.load(self.root / subject / "ground_truth" / self.sequence
                                                     / "flame_params.npz")
        return self._params[subject]

    def _participant(self, subject: str) -> dict:
        try:
            return self.summary["participants"][subject]
        except KeyError:
            raise InputError(str(self.root), f"no identity '{subject}' in this synthetic capture "
                             f"(has {', '.join(self.subjects)})") from None

    @torch.no_grad()
    def render(self, target: str, driver: str, timestep_id: str, world_to_cam: np.ndarray, K: np.ndarray,
               width: int, height: int, background: float | np.ndarray = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """``target``'s true Gaussians under ``driver``'s true motion at ``timestep_id``.

        Args:
            target, driver: participant ids (``"900"``...); equal for self-reenactment.
            timestep_id: the driver's timestep (``timestep_id`` of its ``flame_params.npz``, as
                the supervision store keeps it).
            world_to_cam: ``(C, 4, 4)`` OpenCV world-to-camera of the capture's world frame.
            K: ``(C, 3, 3)`` intrinsics (pixels, centres at +0.5) for ``width x height``.
            background: a grey level in [0, 1] or ``(C, 3)`` colours composited behind.

        Returns:
            ``(rgb (C, H, W, 3) uint8, alpha (C, H, W) float32)``.

        Raises:
            InputError: an unknown identity or a timestep the driver does not have.
        """
        drv = self.motion(driver)
        tids = [str(t) for t in drv.timestep_id] if drv.timestep_id is not None else \
            [f"{t:05d}" for t in range(drv.num_frames)]
        if str(timestep_id) not in tids:
            raise InputError(str(self.root / driver), f"no timestep '{timestep_id}' in the ground-truth motion "
                             f"(has {tids[0]}..{tids[-1]})")
        k = tids.index(str(timestep_id))
        own = self.motion(target)  # the target's true identity shape with the driver's motion
        p = FlameParams.zeros(1, num_vertices=self.asset.num_vertices)
        p.shape = np.asarray(own.shape)
        if own.static_offset is not None:
            p.static_offset = np.asarray(own.static_offset)
        for key in MOTION_KEYS:
            setattr(p, key, np.asarray(getattr(drv, key))[k:k + 1])
        verts = self.model.forward_params(p.to_torch())["vertices"][0]
        g = self.gaussians(target).to_global(face_frames(verts, self.model.faces))
        C = len(world_to_cam)
        bg = torch.as_tensor(np.broadcast_to(np.asarray(background, np.float32), (C, 3)).copy())
        r = render_gaussians(g["means"], g["quats"], g["scales"], g["opacities"], g["rgb"],
                             torch.as_tensor(np.asarray(world_to_cam), dtype=torch.float32),
                             torch.as_tensor(np.asarray(K), dtype=torch.float32), int(width), int(height), bg)
        rgb = (r.rgb.clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
        return rgb, r.alpha.numpy()[..., 0].astype(np.float32)
