"""The pictures the data stages write beside their outputs, for a person to look at.

========================  =====================================================================
stage                     picture
========================  =====================================================================
landmarks                 ``<sequence>/landmarks.png``: camera x frame grid, detected points
                          drawn, frames without a face crossed out in red (:class:`LandmarkSheet`)
canonicalize              ``canonical.png``: the canonical cloud, front and side, coloured by the
                          binding face's region (:func:`canonical_png`)
tokenize                  ``tokens.png``: histograms of the x / y / z coordinate tokens and of
                          points per face (:func:`tokens_png`)
========================  =====================================================================

Every picture is written atomically (:func:`pointillist_data.viz.save_png` or a temporary file
then rename). A statistics panel with fewer than :data:`FEW_SAMPLES` values prints the values
instead of a histogram (:func:`hist_or_values`): a histogram of one value says nothing, and
matplotlib would draw its bar over ``value +/- 0.5``, a range the values never reach.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .fileio import atomic_path
from .viz import contact_sheet, draw_points, draw_text, save_png

__all__ = ["FEW_SAMPLES", "hist_or_values", "save_figure", "LandmarkSheet", "canonical_png", "tokens_png", "REGION_COLOURS"]

# below this many values a histogram says less than the numbers themselves
FEW_SAMPLES = 5

# one colour per :data:`pointillist_data.capture.appearance.REGION_NAMES` entry
REGION_COLOURS = {"skin": "#e0a080", "hair": "#6b4226", "neck": "#c06060", "eyes": "#2060ff", "teeth": "#a0a0a0",
                  "lips": "#ff2080", "brows": "#20a040"}


def hist_or_values(ax, values: Sequence[float] | np.ndarray, title: str, labels: Sequence[str] | None = None,
                   bins: int | np.ndarray | None = None, fmt: str = "{:.4g}") -> None:
    """Draw a histogram of ``values`` on matplotlib axes ``ax``, or, when there are fewer
    than :data:`FEW_SAMPLES`, write the values themselves (``label: value``, one a line) and
    draw no axis range at all (so no range wider than the data is ever shown)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    ax.set_title(f"{title} (n={len(v)})")
    if len(v) < FEW_SAMPLES:
        ax.set_axis_off()
        lines = [f"{labels[k] if labels else f'#{k}'}: {fmt.format(x)}" for k, x in enumerate(v)] or ["no values"]
        ax.text(0.05, 0.9, "\n".join(lines), transform=ax.transAxes, va="top", family="monospace", fontsize=11)
        return
    lo, hi = float(v.min()), float(v.max())
    if bins is None:
        bins = min(20, max(5, len(v) // 2))
    # every value equal: one bar exactly at the value, not matplotlib's value +/- 0.5
    ax.hist(v, bins=bins, range=None if hi > lo else (lo, lo + max(abs(lo) * 1e-6, 1e-12)))
    ax.set_ylabel("count")


class LandmarkSheet:
    """Collects camera-frames during landmark detection and draws them as one grid.

    Cells are kept for up to ``frames_per_camera`` evenly spaced frames of each camera plus
    up to ``flagged_per_camera`` frames without a face (so the flagged ones are visible even
    when they fall between the sampled frames), each reduced to ``thumb_height`` pixels.
    Memory is bounded by ``cameras x (frames_per_camera + flagged_per_camera)`` thumbnails.

    Args:
        title: first line of the picture (e.g. ``"017 EMO-1: landmarks"``).
    """

    def __init__(self, title: str, frames_per_camera: int = 4, flagged_per_camera: int = 2,
                 thumb_height: int = 120, max_cameras: int = 16) -> None:
        self.title, self.fpc, self.flagged_pc = title, frames_per_camera, flagged_per_camera
        self.thumb_height, self.max_cameras = thumb_height, max_cameras
        self.cells: dict[str, list[tuple[int, np.ndarray, bool]]] = {}
        self.counts = {"camera_frames": 0, "no_face": 0}

    def sampled(self, position: int, total: int) -> bool:
        """Whether frame ``position`` (0-based among ``total`` selected frames) is one of the
        evenly spaced frames shown for every camera."""
        k = min(self.fpc, total)
        return k > 0 and position in {int(round(j * (total - 1) / max(1, k - 1))) for j in range(k)}

    def add(self, serial: str, frame: int, position: int, total: int, image: np.ndarray,
            landmarks: np.ndarray | None) -> None:
        """Record one detection.

        Args:
            serial: camera; frame: video frame number; position / total: its place among
                the selected frames (to pick the evenly spaced ones).
            image: ``(H, W, 3)`` uint8 frame as detected on.
            landmarks: ``(L, 2|3)`` pixel coordinates of ``image`` (third column: confidence,
                points with 0 are not drawn), or ``None`` when no face was found.
        """
        self.counts["camera_frames"] += 1
        flagged = landmarks is None
        self.counts["no_face"] += int(flagged)
        cells = self.cells.get(serial)
        if cells is None:
            if len(self.cells) >= self.max_cameras:
                return
            cells = self.cells[serial] = []
        n_flagged = sum(f for _, _, f in cells)
        if not (self.sampled(position, total) or (flagged and n_flagged < self.flagged_pc)):
            return
        s = self.thumb_height / image.shape[0]
        w = max(1, int(round(image.shape[1] * s)))
        from PIL import Image

        thumb = np.asarray(Image.fromarray(np.ascontiguousarray(image[..., :3])).resize((w, self.thumb_height),
                                                                                         Image.BILINEAR))
        if landmarks is not None:
            lm = np.asarray(landmarks, np.float64)
            ok = lm[:, 2] > 0 if lm.shape[1] > 2 else None
            thumb = draw_points(thumb, lm[:, :2] * s, (0, 255, 0), radius=1.0, mask=ok)
        cells.append((frame, thumb, flagged))

    def watch(self, serial: str, frames, total: int):
        """Pass ``(index, image)`` frames of camera ``serial`` through, remembering which one
        the detector of :meth:`recording` sees next (``total``: frames selected)."""
        for pos, (i, img) in enumerate(frames):
            self._current = (serial, int(i), pos, total)
            yield i, img

    def recording(self, detector):
        """``detector`` (anything with ``detect(image, hint) -> (L, 3) | None``) wrapped so that
        each detection on a frame passed through :meth:`watch` is :meth:`add` ed."""
        sheet = self

        class _Recording:
            def detect(self, image, hint=None):
                lm = detector.detect(image, hint)
                serial, frame, pos, total = sheet._current
                sheet.add(serial, frame, pos, total, image, lm)
                return lm

            def __getattr__(self, name):
                return getattr(detector, name)

        return _Recording()

    def picks(self, total: int, no_face_positions: Sequence[int]) -> list[int]:
        """Positions (among ``total`` selected frames) a camera shows: the evenly spaced ones
        and the first frames without a face; for landmarks read from files, whose frames are
        decoded for the picture only."""
        even = [p for p in range(total) if self.sampled(p, total)]
        return sorted(set(even) | set(list(no_face_positions)[: self.flagged_pc]))

    def fill_from_files(self, seq, frames: list[int], summary, progress=None) -> None:
        """Fill the sheet for landmarks read from files (:class:`~pointillist_data.tracking.landmarks.FileLandmarks`),
        decoding only the frames it shows (:meth:`picks`) of up to ``max_cameras`` cameras.

        Args:
            seq: the :class:`~pointillist_data.capture.NersembleSequence` the landmarks belong to.
            frames: the selected video frame numbers (the rows of the landmark files).
            summary: the :class:`~pointillist_data.tracking.landmarks.LandmarkSummary` written.
            progress: reporter (one task, advanced per camera).
        """
        from .capture.landmarks_io import read_normalized_landmarks
        from .progress import NULL_PROGRESS

        serials = list(summary.written)[: self.max_cameras]
        pos_of = {f: k for k, f in enumerate(frames)}
        with (progress or NULL_PROGRESS).task(f"landmark picture {seq.where}", total=len(serials)) as task:
            for serial in serials:
                lm = read_normalized_landmarks(summary.written[serial])
                miss = [pos_of[f] for f in summary.no_face.get(serial, []) if f in pos_of]
                for i, img in seq.iter_frames(serial, [frames[p] for p in self.picks(len(frames), miss)]):
                    p = pos_of[int(i)]
                    row = lm[p] * np.array([img.shape[1], img.shape[0], 1.0], np.float32)
                    self.add(serial, int(i), p, len(frames), img, row if (lm[p, :, 2] > 0).any() else None)
                task.advance()
        n = len(summary.written) * summary.frames
        self.counts = {"camera_frames": n, "no_face": n - summary.faces_found}

    def image(self) -> np.ndarray:
        """``(H, W, 3)`` uint8: each camera's kept frames side by side in frame order (camera
        groups tiled to a roughly square grid, each tile labelled ``<serial> f<frame>``); a
        frame without a face has a red border and cross and says ``NO FACE``."""
        from PIL import Image, ImageDraw

        if not self.cells or not any(self.cells.values()):
            raise ValueError("no camera-frames were recorded")
        w = max(t.shape[1] for c in self.cells.values() for _, t, _ in c)
        cols = max(len(c) for c in self.cells.values())
        blank = np.full((self.thumb_height, w, 3), 255, np.uint8)
        tiles, labels = [], []
        for serial, cells in self.cells.items():
            row = sorted(cells, key=lambda c: c[0])
            for frame, thumb, flagged in row:
                t = np.zeros((self.thumb_height, w, 3), np.uint8)
                t[:, : thumb.shape[1]] = thumb
                if flagged:
                    im = Image.fromarray(t)
                    d = ImageDraw.Draw(im)
                    d.rectangle([0, 0, w - 1, self.thumb_height - 1], outline=(255, 0, 0), width=4)
                    d.line([(0, 0), (w - 1, self.thumb_height - 1)], fill=(255, 0, 0), width=2)
                    d.line([(0, self.thumb_height - 1), (w - 1, 0)], fill=(255, 0, 0), width=2)
                    t = draw_text(np.asarray(im), "NO FACE", (4, self.thumb_height - 14), (255, 60, 60))
                tiles.append(t)
                labels.append(f"{serial} f{frame}")
            tiles += [blank] * (cols - len(row))
            labels += [""] * (cols - len(row))
        # camera groups side by side, so that the grid is about square
        groups = max(1, min(len(self.cells), round(float(np.sqrt(len(self.cells) * self.thumb_height / (cols * w))))))
        sheet = contact_sheet(tiles, cols * groups, labels)
        if sheet.shape[1] < 460:  # room for the two header lines
            sheet = np.concatenate([sheet, np.full((sheet.shape[0], 460 - sheet.shape[1], 3), 255, np.uint8)], 1)
        head = np.full((34, sheet.shape[1], 3), 255, np.uint8)
        c = self.counts
        head = draw_text(head, self.title, (4, 3), (255, 255, 255))
        head = draw_text(head, f"no face in {c['no_face']} of {c['camera_frames']} camera-frame(s) "
                               f"(red); green: detected points", (4, 19), (255, 200, 200) if c["no_face"] else
                         (200, 255, 200))
        return np.concatenate([head, sheet])

    def save(self, path: str | Path) -> Path:
        """Write :meth:`image` atomically as PNG."""
        return save_png(self.image(), path)


def save_figure(fig, out: str | Path, dpi: float | None = 80) -> Path:
    """Write a matplotlib figure to ``out`` as PNG atomically (a temporary name, then a
    rename; the parent folder is created) and close it.

    Args:
        fig: a ``matplotlib.figure.Figure``.
        out: the PNG path.
        dpi: dots per inch; ``None``: the figure's own.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.
    """
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, ".png") as tmp:
        fig.savefig(tmp, dpi=dpi if dpi is not None else "figure", format="png")
    plt.close(fig)
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def canonical_png(points: np.ndarray, binding: np.ndarray, asset, out: str | Path, title: str = "") -> Path:
    """The canonical cloud, front (x, y) and side (z, y) views in metres in the canonical
    FLAME frame (y up, face towards +z), each point coloured by the region of the face it is
    bound to, with the point count per region in the legend.

    Regions are :func:`pointillist_data.capture.appearance.face_regions` of the template
    (skin, hair/scalp, neck, eyes, teeth, lips, brows; from its landmarks and geometry, as
    FLAME's own region masks are not shipped with the model).

    Args:
        points: ``(N, 3)`` float metres; binding: ``(N,)`` int face index of ``asset``.

    Raises:
        ValueError: a binding outside ``[0, asset.num_faces)``.
    """
    from .capture.appearance import REGION_NAMES, face_regions

    binding = np.asarray(binding, np.int64)
    if len(binding) and (binding.min() < 0 or binding.max() >= asset.num_faces):
        raise ValueError(f"binding outside [0, {asset.num_faces})")
    region = face_regions(asset)[binding]
    plt = _pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(10, 5.4))
    for r, name in enumerate(REGION_NAMES):
        sel = region == r
        if not sel.any():
            continue
        for a, (i, j) in zip(ax, ((0, 1), (2, 1)), strict=True):
            a.scatter(points[sel, i], points[sel, j], s=0.6, c=REGION_COLOURS[name],
                      label=f"{name} ({int(sel.sum())})" if a is ax[0] else None)
    ax[0].set_title(f"{title} front, by binding region ({len(binding)} points)".strip())
    ax[0].set_xlabel("x (m)")
    ax[1].set_title("side")
    ax[1].set_xlabel("z (m), face towards +z")
    for a in ax:
        a.set_aspect("equal")
        a.set_ylabel("y (m), up")
        a.grid(True, lw=0.3, alpha=0.5)
    ax[0].legend(loc="lower left", fontsize=8, markerscale=8, framealpha=0.8)
    fig.tight_layout()
    return save_figure(fig, out)


def tokens_png(tokens: np.ndarray, num_faces: int, out: str | Path, title: str = "", num_bins: int = 1024) -> Path:
    """Histograms of one sample's tokens (layout of :mod:`pointillist_data.tokens`): the x, y
    and z coordinate tokens (bins ``0 .. num_bins - 1`` of the quantisation box) and the
    points per bound face (faces holding 0, 1, 2 ... points).

    Args:
        tokens: ``(4N + 8,)`` int token sequence; num_faces: binding vocabulary.
    """
    from .tokens import FRAME

    body = np.asarray(tokens, np.int64)[FRAME:-FRAME].reshape(-1, 4)
    plt = _pyplot()
    fig, ax = plt.subplots(1, 4, figsize=(16, 3.8))
    edges = np.linspace(0, num_bins, 65)
    for k, name in enumerate("xyz"):
        hist_or_values(ax[k], body[:, k], f"{name} tokens (bins 0-{num_bins - 1})", bins=edges, fmt="{:.0f}")
        ax[k].set_xlabel("token")
    counts = np.bincount(body[:, 3] - num_bins, minlength=num_faces)
    ax[3].hist(counts, bins=np.arange(counts.max() + 2) - 0.5)
    ax[3].set_title(f"points per face ({int((counts == 0).sum())} of {num_faces} faces empty)")
    ax[3].set_xlabel("points on the face")
    ax[3].set_ylabel("faces")
    if title:
        fig.suptitle(f"{title}: {len(body)} points, {len(tokens)} tokens")
    fig.tight_layout()
    return save_figure(fig, out)
