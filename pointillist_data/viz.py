"""Small CPU visualisation helpers: shaded mesh pictures, point scatters and contact sheets.

These make the PNGs the stages write (previews, overlays, inspect). They are for looking,
not for optimisation: the differentiable renderer is :mod:`pointillist_data.render`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["project_points", "draw_mesh", "draw_outline", "contour_edges", "draw_points", "draw_text", "contact_sheet", "save_png", "look_at_viewmat",
           "default_K"]


def look_at_viewmat(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """OpenCV world-to-camera ``(4, 4)`` for a camera at ``eye`` looking at ``target``
    (x right, y down, z forward; ``up`` is world up)."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    M = np.eye(4)
    M[:3, :3] = R
    M[:3, 3] = -R @ eye
    return M


def default_K(width: int, height: int, fov_deg: float = 20.0) -> np.ndarray:
    """Pinhole ``K`` with a vertical field of view and centred principal point."""
    f = 0.5 * height / np.tan(np.radians(fov_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def project_points(points: np.ndarray, viewmat: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(N, 2)`` (pixel centres at +0.5) and camera depth ``(N,)``."""
    pc = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = pc[:, 2]
    uv = (pc[:, :2] / np.clip(z[:, None], 1e-9, None)) @ K[:2, :2].T + K[:2, 2]
    return uv, z


def draw_mesh(
    verts: np.ndarray, faces: np.ndarray, viewmat: np.ndarray, K: np.ndarray, width: int, height: int,
    background: np.ndarray | None = None, color: Sequence[float] = (0.85, 0.75, 0.68), wire: bool = False,
    alpha: float = 1.0,
) -> np.ndarray:
    """Draw a Lambert-shaded mesh by the painter's algorithm.

    Args:
        verts: ``(V, 3)`` world positions; faces: ``(F, 3)``.
        viewmat, K: OpenCV world-to-camera and intrinsics.
        background: ``(H, W, 3)`` uint8 image to draw over (black if ``None``).
        wire: draw the outlines of the camera-facing faces only, in ``color`` unshaded
            (a wireframe that stays visible over a photograph).
        alpha: opacity of the mesh over the background.

    Returns:
        ``(H, W, 3)`` uint8 image.
    """
    uv, z = project_points(verts, viewmat, K)
    pc = verts @ viewmat[:3, :3].T + viewmat[:3, 3]
    tri = pc[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True).clip(1e-12)
    facing = -n[:, 2]  # camera looks along +z
    light = np.clip(np.abs(facing), 0.0, 1.0) * 0.8 + 0.2
    order = np.argsort(-z[faces].mean(1))
    base = np.zeros((height, width, 3), np.uint8) if background is None else background.copy()
    img = Image.fromarray(base)
    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    col = np.asarray(color)
    a = int(255 * alpha)
    wire_c = tuple(int(v) for v in np.clip(col * 255, 0, 255)) + (a,)
    for f in order:
        if np.any(z[faces[f]] <= 0):
            continue
        pts = [tuple(p) for p in uv[faces[f]]]
        if wire:
            if facing[f] <= 0:  # outward normal points away from the camera: a hidden face
                continue
            draw.polygon(pts, outline=wire_c)
        else:
            c = tuple(int(v) for v in np.clip(col * light[f] * 255, 0, 255)) + (a,)
            draw.polygon(pts, fill=c)
    img = Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB")
    return np.asarray(img)


def contour_edges(verts: np.ndarray, faces: np.ndarray, viewmat: np.ndarray) -> np.ndarray:
    """Edges ``(E, 2)`` int64 of a mesh's outline seen from a camera: edges between a
    camera-facing and a hidden face (the silhouette and inner contours such as the nose and
    jaw line) and open boundary edges of camera-facing faces (neck, mouth, eyelids)."""
    pc = verts @ viewmat[:3, :3].T + viewmat[:3, 3]
    tri = pc[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    front = (n * tri[:, 0]).sum(1) < 0  # the normal points back towards the camera centre
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    fid = np.tile(np.arange(len(faces)), 3)
    key = np.sort(e, axis=1)
    _, inv, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    n_front = np.bincount(inv, weights=front[fid].astype(float), minlength=len(counts))
    keep = ((counts == 2) & (n_front == 1)) | ((counts == 1) & (n_front == 1))
    first = np.full(len(counts), -1)
    first[inv[::-1]] = np.arange(len(inv))[::-1]
    return key[first[keep]]


def draw_outline(verts: np.ndarray, faces: np.ndarray, viewmat: np.ndarray, K: np.ndarray, background: np.ndarray,
                 color: Sequence[int] = (0, 240, 255), width: int = 2) -> np.ndarray:
    """A high-contrast outline of a mesh (:func:`contour_edges`) over ``background (H, W, 3)``
    uint8; stays readable at any resolution, unlike a dense wireframe."""
    uv, z = project_points(verts, viewmat, K)
    img = Image.fromarray(np.ascontiguousarray(background[..., :3]))
    draw = ImageDraw.Draw(img)
    for a, b in contour_edges(verts, faces, viewmat):
        if z[a] > 0 and z[b] > 0:
            draw.line([tuple(uv[a]), tuple(uv[b])], fill=tuple(color), width=width)
    return np.asarray(img)


def draw_points(image: np.ndarray, uv: np.ndarray, color: Sequence[int], radius: float = 1.5,
                mask: np.ndarray | None = None) -> np.ndarray:
    """Draw filled dots at pixel positions ``uv (N, 2)`` (pixel centres at +0.5) on ``image
    (H, W, 3)`` uint8; ``mask (N,)`` bool selects which."""
    img = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    draw = ImageDraw.Draw(img)
    for k, (x, y) in enumerate(np.asarray(uv, dtype=np.float64)):
        if (mask is None or mask[k]) and np.isfinite(x) and np.isfinite(y):
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=tuple(color))
    return np.asarray(img)


def draw_text(image: np.ndarray, text: str, xy: tuple[int, int] = (3, 3), color: Sequence[int] = (255, 255, 0)) -> np.ndarray:
    """Write ``text`` on ``image`` with a dark box behind it (readable on any photograph)."""
    img = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    draw = ImageDraw.Draw(img)
    box = draw.textbbox(xy, text)
    draw.rectangle([box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1], fill=(0, 0, 0))
    draw.text(xy, text, fill=tuple(color))
    return np.asarray(img)


def contact_sheet(images: Sequence[np.ndarray], cols: int, labels: Sequence[str] | None = None, pad: int = 2) -> np.ndarray:
    """Tile ``(H, W, 3)`` uint8 images (all the same size) in a grid, optionally labelled."""
    h, w = images[0].shape[:2]
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, im in enumerate(images):
        x, y = pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)
        sheet.paste(Image.fromarray(np.ascontiguousarray(im[..., :3])), (x, y))
        if labels:
            draw.text((x + 2, y + 1), labels[i], fill=(255, 255, 0))
    return np.asarray(sheet)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write ``(H, W, 3|4)`` uint8 (or float in [0, 1]) as PNG atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = image
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    tmp = path.with_name(f".{path.name}.tmp.png")
    Image.fromarray(arr).save(tmp)
    tmp.replace(path)
    return path
