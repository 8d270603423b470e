"""The FLAME forward pass (shape, expression, pose, translation, static offset -> vertices).

Built on :func:`smplx.lbs.lbs` (linear blend skinning with pose correctives). The pose
vector is VHAP's: ``[rotation, neck, jaw, eyes(6)]`` axis-angle, so ``rotation`` turns the
head about the root joint; ``static_offset`` is added to the template before skinning and
``translation`` after (CONVENTIONS, "FLAME"). Source: Li et al. 2017 (FLAME); VHAP.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from smplx.lbs import lbs
from torch import Tensor, nn

from .asset import FlameAsset

__all__ = ["FlameModel", "FlameOutput"]


class FlameOutput(dict):
    """``vertices (B, V, 3)``, ``joints (B, J, 3)`` and ``landmarks[name] (B, L, 3)``."""

    @property
    def vertices(self) -> Tensor:
        return self["vertices"]

    @property
    def joints(self) -> Tensor:
        return self["joints"]


def _batch(x: Tensor | None, B: int, width: int, like: Tensor, name: str) -> Tensor:
    if x is None:
        return like.new_zeros(B, width)
    x = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if x.dim() == 1:
        x = x[None]
    if x.dim() != 2:
        raise ValueError(f"{name}: expected (B, {width}) or ({width},), got {tuple(x.shape)}")
    if x.shape[0] == 1 and B > 1:
        x = x.expand(B, -1)
    return x


class FlameModel(nn.Module):
    """Differentiable FLAME (with teeth when the asset has them).

    Args:
        asset: a validated :class:`FlameAsset`.
        dtype: float dtype of the buffers (``torch.float32`` or ``torch.float64``).

    Buffers hold the asset's arrays; ``faces`` is ``(F, 3)`` int64.
    """

    def __init__(self, asset: FlameAsset, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.asset = asset
        f = lambda a: torch.as_tensor(a, dtype=dtype)  # noqa: E731
        self.register_buffer("v_template", f(asset.v_template))
        self.register_buffer("faces", torch.as_tensor(asset.faces, dtype=torch.long))
        self.register_buffer("shapedirs", f(asset.shapedirs))
        self.register_buffer("exprdirs", f(asset.exprdirs))
        self.register_buffer("posedirs", f(asset.posedirs))
        self.register_buffer("J_regressor", f(asset.J_regressor))
        self.register_buffer("parents", torch.as_tensor(asset.parents, dtype=torch.long))
        self.register_buffer("lbs_weights", f(asset.lbs_weights))
        self.landmark_sets = sorted(asset.landmarks)
        for name, emb in asset.landmarks.items():
            self.register_buffer(f"lmk_{name}_face_idx", torch.as_tensor(emb.face_idx, dtype=torch.long))
            self.register_buffer(f"lmk_{name}_bary", f(emb.bary))

    @property
    def num_vertices(self) -> int:
        return int(self.v_template.shape[0])

    def landmark_embedding(self, name: str) -> tuple[Tensor, Tensor]:
        """``(face_idx (L,), bary (L, 3))`` of a landmark set; ``KeyError`` lists the sets."""
        if name not in self.landmark_sets:
            raise KeyError(f"landmark set '{name}' not in this model (has {self.landmark_sets})")
        return getattr(self, f"lmk_{name}_face_idx"), getattr(self, f"lmk_{name}_bary")

    def landmarks(self, vertices: Tensor, name: str) -> Tensor:
        """Landmarks ``(B, L, 3)`` of ``vertices (B, V, 3)`` by barycentric embedding."""
        fi, bc = self.landmark_embedding(name)
        return torch.einsum("lk,blkd->bld", bc.to(vertices.dtype), vertices[:, self.faces[fi]])

    def forward(
        self,
        shape: Tensor | None = None,
        expr: Tensor | None = None,
        rotation: Tensor | None = None,
        neck_pose: Tensor | None = None,
        jaw_pose: Tensor | None = None,
        eyes_pose: Tensor | None = None,
        translation: Tensor | None = None,
        static_offset: Tensor | None = None,
        batch_size: int | None = None,
    ) -> FlameOutput:
        """Evaluate FLAME.

        Args:
            shape: ``(B, S')`` or ``(S',)`` identity coefficients; only the first
                ``min(S', asset.n_shape)`` are used (VHAP stores 300).
            expr: ``(B, E')`` expression coefficients (VHAP stores 100), truncated likewise.
            rotation, neck_pose, jaw_pose: ``(B, 3)`` axis-angle (radians).
            eyes_pose: ``(B, 6)`` left then right eye axis-angle.
            translation: ``(B, 3)`` metres, added after skinning.
            static_offset: ``(B or 1, V, 3)`` metres, added to the template before skinning.
            batch_size: used when every parameter is ``None``.

        Returns:
            :class:`FlameOutput` with ``vertices (B, V, 3)``, ``joints (B, J, 3)`` and one
            ``landmarks_<name> (B, L, 3)`` per landmark set.
        """
        given = [x for x in (shape, expr, rotation, neck_pose, jaw_pose, eyes_pose, translation) if x is not None]
        B = batch_size or max([x.shape[0] if x.dim() > 1 else 1 for x in given], default=1)
        ref = self.v_template
        S, E = self.shapedirs.shape[-1], self.exprdirs.shape[-1]
        shape = _batch(shape, B, S, ref, "shape")[:, :S]
        expr = _batch(expr, B, E, ref, "expr")[:, :E]
        shape = torch.nn.functional.pad(shape, (0, S - shape.shape[1]))
        expr = torch.nn.functional.pad(expr, (0, E - expr.shape[1]))
        pose = torch.cat(
            [
                _batch(rotation, B, 3, ref, "rotation"),
                _batch(neck_pose, B, 3, ref, "neck_pose"),
                _batch(jaw_pose, B, 3, ref, "jaw_pose"),
                _batch(eyes_pose, B, 6, ref, "eyes_pose"),
            ],
            dim=1,
        )
        template = ref[None].expand(B, -1, -1)
        if static_offset is not None:
            so = torch.as_tensor(static_offset, dtype=ref.dtype, device=ref.device)
            if so.dim() == 2:
                so = so[None]
            if so.shape[-2:] != ref.shape:
                raise ValueError(f"static_offset: expected (B, {ref.shape[0]}, 3), got {tuple(so.shape)}")
            template = template + so
        verts, joints = lbs(
            torch.cat([shape, expr], dim=1),
            pose,
            template,
            torch.cat([self.shapedirs, self.exprdirs], dim=-1),
            self.posedirs,
            self.J_regressor,
            self.parents,
            self.lbs_weights,
        )
        t = _batch(translation, B, 3, ref, "translation")[:, None]
        out = FlameOutput(vertices=verts + t, joints=joints + t)
        for name in self.landmark_sets:
            out[f"landmarks_{name}"] = self.landmarks(out["vertices"], name)
        return out

    def forward_params(self, params: Mapping[str, Tensor]) -> FlameOutput:
        """:meth:`forward` from a mapping with VHAP's key names (extra keys ignored)."""
        keys = ("shape", "expr", "rotation", "neck_pose", "jaw_pose", "eyes_pose", "translation", "static_offset")
        return self.forward(**{k: params[k] for k in keys if k in params and params[k] is not None})
