"""A folder of monocular videos as a set of identities (``pointillist run --videos DIR``):
each video file is one identity whose subject id is the file's stem."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

__all__ = ["VIDEO_SUFFIXES", "video_subjects", "video_path"]

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")


def video_subjects(videos: str | Path, participants: list | str = "all") -> list[str]:
    """Subject ids (file stems, sorted) of the videos in folder ``videos``; ``participants``
    ``"all"`` keeps every one, else a list or comma-separated stems to keep.

    Raises:
        InputError: no folder, no video in it, two videos with one stem, or a stem asked for
            that has no video.
    """
    root = Path(videos)
    if not root.is_dir():
        raise InputError(f"--videos {videos}", "not a folder")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    stems = [p.stem for p in files]
    if not stems:
        raise InputError(f"--videos {videos}", f"no video files ({', '.join('*' + s for s in VIDEO_SUFFIXES)})")
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise InputError(f"--videos {videos}", f"several videos share the subject id(s) {', '.join(dupes)}")
    if isinstance(participants, str) and participants.strip() == "all":
        return stems
    wanted = [t.strip() for t in participants.split(",")] if isinstance(participants, str) else \
        [str(p) for p in participants]
    missing = [w for w in wanted if w and w not in stems]
    if missing:
        raise InputError(f"--videos {videos}", f"no video for participant(s) {', '.join(missing)}")
    return [w for w in wanted if w]


def video_path(videos: str | Path, subject: str) -> Path:
    """The video file of ``subject`` (its stem) in folder ``videos``.

    Raises:
        InputError: no such video.
    """
    for p in sorted(Path(videos).iterdir()):
        if p.stem == subject and p.suffix.lower() in VIDEO_SUFFIXES:
            return p
    raise InputError(f"--videos {videos}", f"no video for subject {subject}")
