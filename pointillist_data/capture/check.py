"""Every problem of a participant's NeRSemble inputs, found without decoding a frame.

``pointillist run`` calls :func:`capture_problems` for every participant before any worker
starts (``pipelines.runner.check_run``), so a missing participant, a missing or damaged
calibration and every unreadable video of the selection are named at once, in seconds,
instead of one at a time by a worker minutes later. The checks are those
:class:`~pointillist_data.capture.nersemble.NersembleSequence` makes when a stage opens a
sequence (layout: that module's docstring), collected instead of raised.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import PointillistError
from .camera import Camera, CameraError
from .nersemble import ASSETS, FULL_HEIGHT, FULL_WIDTH, SERIALS, list_sequences
from .selection import CaptureSelection, match_sequences
from .video import video_info

__all__ = ["capture_problems"]

# av.open is mostly waiting on the file system; a few threads keep a large capture's check short
_THREADS = 8


def _calibration(root: Path, pid: int, problems: list[str]) -> tuple[dict, dict] | None:
    """``(world_2_cam, intrinsics)`` of ``camera_params.json``, or ``None`` (problem added)."""
    path = root / ASSETS["calibration"].format(p_id=pid)
    if not path.is_file():
        problems.append(f"{path}: camera calibration not found (participant {pid:03d})")
        return None
    try:
        calib = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        problems.append(f"{path}: not valid JSON ({e})")
        return None
    if not isinstance(calib, dict) or "world_2_cam" not in calib or "intrinsics" not in calib:
        problems.append(f"{path}: needs 'world_2_cam' and 'intrinsics'")
        return None
    w2c, intr = calib["world_2_cam"], calib["intrinsics"]
    if not isinstance(w2c, dict):
        problems.append(f"{path}: 'world_2_cam' is not a {{serial: 4x4 matrix}} object")
        return None
    return {str(k): v for k, v in w2c.items()}, intr


def _camera_problem(calib_path: Path, serial: str, w2c, intr) -> str | None:
    """The calibration's problem with one camera (checked as :class:`Camera` checks it)."""
    import numpy as np

    try:
        k = intr[serial] if isinstance(intr, dict) else intr
        Camera(np.asarray(w2c, dtype=np.float64), np.asarray(k, dtype=np.float64), FULL_WIDTH, FULL_HEIGHT, serial,
               str(calib_path))
    except CameraError as e:
        return str(e)
    except (KeyError, TypeError, ValueError) as e:
        return f"{calib_path} camera {serial}: unreadable matrices ({type(e).__name__}: {e})"
    return None


def _info(path: Path) -> tuple[int, int, int] | str:
    try:
        return video_info(path)
    except FileNotFoundError:
        return f"{path}: video not found"
    except (PointillistError, OSError) as e:
        return str(e).splitlines()[0] if str(e) else f"{path}: unreadable ({type(e).__name__})"


def capture_problems(root: str | Path, pid: int, selection: CaptureSelection | None = None,
                     masks: bool = True) -> list[str]:
    """Every problem of participant ``pid``'s inputs for ``selection``, each a line naming the
    file (or option) and the problem; ``[]`` when the stages can open every selected sequence.

    Checked: the participant's folder; the selected sequences exist (``--sequences``);
    ``calibration/camera_params.json`` exists, is JSON with ``world_2_cam`` / ``intrinsics``
    and a valid camera (finite, proper rotation, positive focal lengths, principal point in
    the image) for every selected serial; ``color_calibration.json`` is JSON when present;
    the selected cameras (``--cameras``) exist; every selected video (and alpha map) opens
    and has frames, the calibration's aspect ratio, the same frame count as the sequence's
    other cameras, and the frames ``--frames`` names; with ``masks``, each camera has alpha
    maps or a ``BACKGROUND`` image for its masks (the stages after ``landmarks`` use them).
    Video headers only are read (no frame is decoded).

    Args:
        root: the NeRSemble folder (holding ``<pid:03d>/``).
        pid: participant id.
        selection: sequences, cameras and frames of the run (default: everything).
        masks: check that every camera has a source for its masks.

    Returns:
        Problem lines, in the order found (participant, calibration, then per sequence).
    """
    root, pid = Path(root), int(pid)
    sel = selection or CaptureSelection()
    folder = root / f"{pid:03d}"
    if not folder.is_dir():
        there = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit()) if root.is_dir() else []
        listing = ", ".join(there[:12]) + (f" ... ({len(there)} in all)" if len(there) > 12 else "")
        return [f"participant {pid:03d}: no folder {folder} in the capture (participants there: {listing or 'none'})"]
    problems: list[str] = []
    calib = _calibration(root, pid, problems)
    calib_path = root / ASSETS["calibration"].format(p_id=pid)
    ccm = root / ASSETS["color_calibration"].format(p_id=pid)
    if ccm.exists():
        try:
            json.loads(ccm.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            problems.append(f"{ccm}: not valid JSON ({e})")
    try:
        seqs = match_sequences(sel.sequences, list_sequences(root, pid), f"participant {pid:03d} in {root}")
    except PointillistError as e:
        problems.append(str(e))
        return problems
    checked_cameras: set[str] = set()
    for seq in seqs:
        where = f"participant {pid:03d}, sequence {seq}"
        video = lambda s, q=seq: root / ASSETS["images"].format(p_id=pid, seq_name=q, serial=s)  # noqa: E731
        # the serials NersembleSequence uses: the rig's with a video, then the calibration's others
        present = {p.name[len("cam_"):-len(".mp4")] for p in video("X").parent.glob("cam_*.mp4")}
        available = [s for s in SERIALS if s in present]
        available += sorted(s for s in present if s not in SERIALS and (calib is None or s in calib[0]))
        try:
            serials = sel.camera_serials(available, where)
        except PointillistError as e:
            problems.append(str(e))
            continue
        for s in serials:
            if calib is not None and s not in calib[0]:
                problems.append(f"{calib_path}: camera {s} missing (it has a video in {where})")
            elif calib is not None and s not in checked_cameras:
                checked_cameras.add(s)
                if (p := _camera_problem(calib_path, s, calib[0][s], calib[1])) is not None:
                    problems.append(p)
        alpha = {s: video(s).parent.parent / "alpha_maps" / f"cam_{s}.mp4" for s in serials}
        paths = [video(s) for s in serials] + [a for a in alpha.values() if a.exists()]
        with ThreadPoolExecutor(min(_THREADS, max(1, len(paths)))) as pool:
            infos = dict(zip(paths, pool.map(_info, paths), strict=True))
        counts = {}
        for s in serials:
            info = infos[video(s)]
            if isinstance(info, str):
                problems.append(info)
                continue
            n, h, w = info
            counts[s] = n
            if abs(w / h - FULL_WIDTH / FULL_HEIGHT) > 0.01:
                problems.append(f"{video(s)}: video {w}x{h} does not have the calibration's "
                                f"{FULL_WIDTH}x{FULL_HEIGHT} aspect ratio")
            a = alpha[s]
            if a in infos and isinstance(infos[a], str):
                problems.append(infos[a])
            bg = root / ASSETS["backgrounds"].format(p_id=pid, serial=s)
            if masks and a not in infos and not bg.exists():
                problems.append(f"{video(s)}: no alpha map ({a}) and no BACKGROUND image ({bg}) for its masks")
        if len(set(counts.values())) > 1:
            problems.append(f"{where}: cameras disagree on frame counts {counts}")
        elif counts:
            try:
                sel.frame_indices(next(iter(counts.values())))
            except PointillistError as e:
                problems.append(f"{e} ({where})")
    return problems
