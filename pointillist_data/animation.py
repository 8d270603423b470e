"""Binding-based animation of canonical Gaussians with FLAME (paper section 4.3).

A canonical point cloud (the identity's shape, zero expression and pose: see
:data:`pointillist_data.canonical.CANONICAL_PARAMS`) where every point carries a binding
``f`` (the FLAME face it belongs to) is animated in one of two ways, through one API:

``mode="barycentric"`` (the paper's)
    The point is projected onto the plane of face ``f`` of the canonical mesh; the
    projection's barycentric coordinates ``(b0, b1, b2)`` interpolate the face's vertex
    attributes - LBS weights, expression directions and pose correctives - so that the
    projection is deformed by FLAME's own process (expression and pose blendshapes, then
    linear blend skinning with the interpolated weights, then translation). The signed
    offset ``h`` of the point along the canonical face normal is kept: it is added along the
    deformed face's normal, scaled like the face (``h k_t / k_0``). Barycentric coordinates
    are those of the projection onto the face's *plane* (not clamped to the triangle), so a
    rigid motion of the mesh moves every point rigidly.

``mode="face_frame"`` (GaussianAvatars)
    The point is rigid in the frame of its face (:mod:`pointillist_data.flame.frames`):
    ``mu_t = k_t R_t R_0^T (mu - T_0) / k_0 + T_t``.

In both modes a Gaussian's rotation and scale follow its face frame:
``q_t = q_{R_t} q_{R_0}^* q`` and ``s_t = s k_t / k_0``. A point exactly on a mesh vertex
moves exactly as that vertex in the barycentric mode; both modes are the identity at the
canonical parameters and agree under rigid head motion.

Everything is batched over ``T`` timesteps and differentiable with respect to the points,
scales, rotations and the FLAME parameters. Source: the paper's section 4.3 (barycentric
interpolation of LBS weights and expression directions), GaussianAvatars (face frames),
FLAME (Li et al. 2017) via ``smplx.lbs``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

import torch
from smplx.lbs import batch_rigid_transform, batch_rodrigues
from torch import Tensor, nn

from .flame.frames import FaceFrames, face_frames, global_to_local, local_to_global
from .flame.model import FlameModel
from .flame.params import FlameParams
from .quaternion import quat_conjugate, quat_multiply

__all__ = ["PointBinding", "FlameMotion", "AnimatedGaussians", "Animator", "bind_points", "MODES"]

Mode = Literal["barycentric", "face_frame"]
MODES = ("barycentric", "face_frame")
_POSE_KEYS = (("rotation", 3), ("neck_pose", 3), ("jaw_pose", 3), ("eyes_pose", 6))


class PointBinding(NamedTuple):
    """Where points sit on their bound faces of the canonical mesh.

    ``binding (N,)`` int64 face index; ``bary (N, 3)`` barycentric coordinates of the
    projection onto the face's plane (rows sum to 1, may leave ``[0, 1]`` off the
    triangle); ``height (N,)`` signed distance along the face normal (metres).
    """

    binding: Tensor
    bary: Tensor
    height: Tensor


class FlameMotion(NamedTuple):
    """FLAME's deformation at ``T`` timesteps, before and after skinning.

    ``rest (T, V, 3)``: canonical vertices plus expression, pose-corrective and dynamic
    offsets (before skinning); ``transforms (T, J, 4, 4)``: the joints' skinning transforms;
    ``translation (T, 3)``; ``vertices (T, V, 3)``: the posed mesh.
    """

    rest: Tensor
    transforms: Tensor
    translation: Tensor
    vertices: Tensor


class AnimatedGaussians(NamedTuple):
    """Animated Gaussians: ``means (T, N, 3)`` metres, ``scales (T, N, 3)`` activated (or
    ``None``), ``quats (T, N, 4)`` wxyz (or ``None``), and the posed mesh ``vertices (T, V, 3)``."""

    means: Tensor
    scales: Tensor | None
    quats: Tensor | None
    vertices: Tensor


def bind_points(verts: Tensor, faces: Tensor, points: Tensor, binding: Tensor, eps: float = 1e-20) -> PointBinding:
    """Project points onto the planes of their bound faces.

    Args:
        verts: ``(V, 3)`` canonical mesh vertices (metres).
        faces: ``(F, 3)`` int64.
        points: ``(N, 3)`` canonical points (metres).
        binding: ``(N,)`` int64 face per point.
        eps: floor on the squared area of degenerate faces.

    Returns:
        :class:`PointBinding` (differentiable with respect to ``points`` and ``verts``).

    Raises:
        ValueError: a binding outside ``[0, F)`` or mismatched shapes.
    """
    if points.shape[-1] != 3 or binding.shape != points.shape[:1]:
        raise ValueError(f"bind_points: points {tuple(points.shape)} and binding {tuple(binding.shape)} disagree")
    if binding.numel() and (int(binding.min()) < 0 or int(binding.max()) >= faces.shape[0]):
        raise ValueError(f"bind_points: binding outside [0, {faces.shape[0]})")
    tri = verts[faces[binding]]  # (N, 3, 3)
    v0, v1, v2 = tri.unbind(-2)
    e1, e2 = v1 - v0, v2 - v0
    n = torch.linalg.cross(e1, e2, dim=-1)
    nn2 = (n * n).sum(-1).clamp_min(eps)
    d = points - v0
    # barycentrics of the projection: areas of the sub-triangles over the whole (signed, via n)
    b1 = (torch.linalg.cross(d, e2, dim=-1) * n).sum(-1) / nn2
    b2 = (torch.linalg.cross(e1, d, dim=-1) * n).sum(-1) / nn2
    bary = torch.stack([1.0 - b1 - b2, b1, b2], -1)
    height = (d * n).sum(-1) / nn2.sqrt()
    return PointBinding(binding, bary, height)


def _as_tensors(params: Mapping[str, Tensor] | FlameParams, like: Tensor) -> dict[str, Tensor]:
    if isinstance(params, FlameParams):
        params = params.to_torch(like.device, like.dtype)
    return {k: torch.as_tensor(v, dtype=like.dtype, device=like.device) for k, v in params.items()
            if k != "timestep_id" and v is not None and not isinstance(v, str)}


class Animator(nn.Module):
    """FLAME-driven animation of one identity's canonical Gaussians.

    Args:
        flame: the FLAME model (with teeth when the asset has them).
        shape: ``(S,)`` identity coefficients of the avatar (VHAP stores 300).
        static_offset: ``(V, 3)`` or ``(1, V, 3)`` per-vertex offset before skinning, or ``None``.

    The canonical mesh is FLAME at ``shape`` (and ``static_offset``) with zero expression,
    pose and translation. Motion parameters (VHAP key names, ``(T, d)``) supply ``expr``,
    ``rotation``, ``neck_pose``, ``jaw_pose``, ``eyes_pose``, ``translation`` and optionally
    ``dynamic_offset (T, V, 3)``; any ``shape`` or ``static_offset`` in them is ignored (the
    avatar keeps its identity, which is what cross-reenactment needs).
    """

    def __init__(self, flame: FlameModel, shape: Tensor, static_offset: Tensor | None = None) -> None:
        super().__init__()
        self.flame = flame
        ref = flame.v_template
        kw = {"shape": torch.as_tensor(shape, dtype=ref.dtype, device=ref.device).reshape(1, -1)}
        if static_offset is not None:
            kw["static_offset"] = torch.as_tensor(static_offset, dtype=ref.dtype, device=ref.device).reshape(1, -1, 3)
        with torch.no_grad():
            cv = flame(**kw)["vertices"][0]
        self.register_buffer("canonical_vertices", cv)
        self._frames0: FaceFrames | None = None

    @property
    def faces(self) -> Tensor:
        return self.flame.faces

    @property
    def canonical_frames(self) -> FaceFrames:
        """Face frames of the canonical mesh ``(F, ...)``."""
        if self._frames0 is None or self._frames0.T.device != self.canonical_vertices.device:
            self._frames0 = face_frames(self.canonical_vertices, self.faces)
        return self._frames0

    def bind(self, points: Tensor, binding: Tensor) -> PointBinding:
        """:func:`bind_points` on the canonical mesh."""
        return bind_points(self.canonical_vertices, self.faces, points, binding)

    def motion(self, params: Mapping[str, Tensor] | FlameParams) -> FlameMotion:
        """FLAME's deformation of the canonical mesh for ``T`` timesteps of ``params``."""
        fl = self.flame
        cv = self.canonical_vertices
        p = _as_tensors(params, cv)
        T = max([v.shape[0] for k, v in p.items() if v.dim() >= 2 and k not in ("shape", "static_offset")], default=1)
        E = fl.exprdirs.shape[-1]
        expr = p.get("expr", cv.new_zeros(T, E)).reshape(T, -1)[:, :E]
        expr = nn.functional.pad(expr, (0, E - expr.shape[1]))
        shaped = cv[None] + torch.einsum("vde,te->tvd", fl.exprdirs, expr)
        joints = torch.einsum("jv,tvd->tjd", fl.J_regressor, shaped)
        pose = torch.cat([p.get(k, cv.new_zeros(T, d)).reshape(T, d) for k, d in _POSE_KEYS], 1)
        rot = batch_rodrigues(pose.reshape(-1, 3)).reshape(T, -1, 3, 3)
        eye = torch.eye(3, dtype=cv.dtype, device=cv.device)
        pose_feature = (rot[:, 1:] - eye).reshape(T, -1)
        rest = shaped + (pose_feature @ fl.posedirs).reshape(T, -1, 3)
        if "dynamic_offset" in p:
            rest = rest + p["dynamic_offset"].reshape(T, -1, 3)
        _, A = batch_rigid_transform(rot, joints, fl.parents, dtype=cv.dtype)
        trans = p.get("translation", cv.new_zeros(T, 3)).reshape(T, 3)
        verts = _skin(fl.lbs_weights, A, rest) + trans[:, None]
        return FlameMotion(rest, A, trans, verts)

    def animate(self, points: Tensor, binding: Tensor, params: Mapping[str, Tensor] | FlameParams,
                scales: Tensor | None = None, quats: Tensor | None = None, mode: Mode = "barycentric",
                motion: FlameMotion | None = None) -> AnimatedGaussians:
        """Animate canonical Gaussians to ``T`` timesteps.

        Args:
            points: ``(N, 3)`` canonical positions (metres, FLAME space).
            binding: ``(N,)`` int64 face per point.
            params: motion parameters with a leading ``T`` (VHAP keys), or :class:`FlameParams`.
            scales: ``(N, 3)`` activated canonical scales (metres), or ``None``.
            quats: ``(N, 4)`` canonical wxyz rotations, or ``None``.
            mode: ``"barycentric"`` (paper 4.3) or ``"face_frame"`` (GaussianAvatars).
            motion: a precomputed :meth:`motion` of ``params`` (reused across calls).

        Returns:
            :class:`AnimatedGaussians` with a leading ``T``.

        Raises:
            ValueError: an unknown mode or a binding outside the mesh's faces.
        """
        if mode not in MODES:
            raise ValueError(f"animate: mode must be one of {MODES}, got {mode!r}")
        m = motion if motion is not None else self.motion(params)
        # frames of the bound faces only (a cloud binds to a fraction of the mesh's faces)
        used, b = torch.unique(binding, return_inverse=True)
        f0 = FaceFrames(*(t[used] for t in self.canonical_frames))
        ft = face_frames(m.vertices, self.faces[used])
        if mode == "face_frame":
            mu, ls, q = global_to_local(f0, b, points, scales, quats)
            means, sc, qt = local_to_global(ft, b, mu, ls, q)
            return AnimatedGaussians(means, sc, qt, m.vertices)
        pb = self.bind(points, binding)
        fv = self.faces[binding]  # (N, 3)
        surf_rest = torch.einsum("nk,tnkd->tnd", pb.bary, m.rest[:, fv])
        w = torch.einsum("nk,nkj->nj", pb.bary, self.flame.lbs_weights[fv])
        surf = _skin(w, m.transforms, surf_rest) + m.translation[:, None]
        ratio = ft.k[:, b] / f0.k[b]  # (T, N)
        normal = ft.R[:, b, :, 1]  # the face normal is the frame's second axis
        means = surf + (pb.height * ratio)[..., None] * normal
        sc = None if scales is None else scales * ratio[..., None]
        qt = None
        if quats is not None:
            dq = quat_multiply(ft.q[:, b], quat_conjugate(f0.q[b]))
            qt = quat_multiply(dq, quats)
        return AnimatedGaussians(means, sc, qt, m.vertices)


def _skin(weights: Tensor, A: Tensor, rest: Tensor) -> Tensor:
    """Linear blend skinning: ``weights (N, J)``, ``A (T, J, 4, 4)``, ``rest (T, N, 3)`` -> ``(T, N, 3)``."""
    T = A.shape[0]
    M = torch.einsum("nj,tjab->tnab", weights, A.reshape(T, -1, 4, 4)[..., :3, :])  # (T, N, 3, 4)
    return (M[..., :3] @ rest[..., None]).squeeze(-1) + M[..., 3]
