"""One config dataclass per command of the "Run and status" and "Utilities" help panels
(``status``, ``import``, ``validate``, ``inspect``, ``split``, ``demo``, ``demo-capture``,
``flame info`` / ``preview`` / ``build-demo``; ``run``'s is :class:`pipelines.stages.PipelineConfig`):
the documented fields are the command's flags or arguments (:mod:`pipelines.config_cli`).

Importable without torch (the command line builds its options at start-up). Errors raised in
``__post_init__`` name the field, which the command line turns into the flag that set it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from pointillist_data.capture.synthetic_config import SyntheticCaptureConfig

__all__ = ["StatusJob", "ValidateJob", "InspectJob", "SplitJob", "ImportJob", "IMPORT_SOURCES", "DemoJob",
           "DemoCaptureJob", "FlameInfoJob", "FlamePreviewJob", "FlameBuildDemoJob"]

#: ``import --from``: VHAP tracking exports and GaussianAvatars output folders
IMPORT_SOURCES = ("vhap", "ga")


@dataclass
class StatusJob:
    """``pointillist status``: what a run folder holds.

    Attributes:
        out: output folder or URL of a run (the argument ``OUT``).
        store: token store of the run (default: the run's, else ``OUT/store.zarr``).
    """

    out: str
    store: str | None = None


@dataclass
class ValidateJob:
    """``pointillist validate``: the checks of a token or supervision store.

    Attributes:
        store: store path or fsspec URL (the argument ``STORE``).
    """

    store: str


@dataclass
class InspectJob:
    """``pointillist inspect``: a store's summary, per-sample table and picture.

    Attributes:
        store: store path or fsspec URL (the argument ``STORE``).
        png: picture to write (default: ``./<store name>_inspect.png``; never into the store).
        no_png: draw no picture (the flag ``--no-png``).
        sample: sample drawn in the picture (index in the store; negative counts from the end).
        where: filter of the table, e.g. ``psnr >= 28 and split == train`` (the fields of
            ``SampleDataset(where=)``: see README "Filter fields").
        sort: column the table is sorted by (``-psnr``: descending).
        json: print only JSON on stdout: the summary, the table and the picture's path
            (``picture``, null with ``--no-png``); the flag ``--json``.
    """

    store: str
    png: str | None = None
    no_png: bool = False
    sample: int = 0
    where: str | None = None
    sort: str | None = None
    json: bool = False

    def __post_init__(self) -> None:
        if self.no_png and self.png is not None:
            raise ValueError("png / no_png: give a picture path or no picture, not both")


@dataclass
class SplitJob:
    """``pointillist split``: the train / test split of the participants present.

    Attributes:
        nersemble: NeRSemble folder (participant folders ``017/`` ...).
        out: split JSON to write.
        n_test: test identities held out.
        seed: seed of the draw (``random.Random(seed)``).
    """

    nersemble: str
    out: str = "manifests/nersemble_split.json"
    n_test: int = 25
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_test < 0:
            raise ValueError(f"n_test: must be >= 0, got {self.n_test}")


@dataclass
class ImportJob:
    """``pointillist import``: a VHAP tracking or a GaussianAvatars avatar as a run's stage outputs.

    Attributes:
        src: VHAP export folder (``--from vhap``) or GaussianAvatars output folder (``--from
            ga``); the argument ``SRC``.
        source: ``vhap`` (a tracking: replaces landmarks + track) or ``ga`` (an avatar:
            replaces landmarks + track + fit); the flag ``--from``.
        out: run output folder or URL (as for ``pointillist run``).
        participant: participant id the files belong to.
        tracking: vhap: VHAP's tracking output folder or ``tracked_flame_params_<epoch>.npz``
            (optional).
        epoch: vhap: epoch of the tracked parameters (default: the largest, as VHAP's exporter).
        iteration: ga: ``iteration_<N>`` to import (default: the largest).
        ply_sh_degree: ga: SH degree of the written PLY, 0..3 (default: the imported one's).
        flame: FLAME model file (default: the demo head; also ``POINTILLIST_FLAME_MODEL``).
    """

    src: str
    source: str = field(metadata={"choices": IMPORT_SOURCES, "aliases": ("--from",)})
    out: str
    participant: int
    tracking: str | None = None
    epoch: int | None = None
    iteration: int | None = None
    ply_sh_degree: int | None = None
    flame: str | None = None

    def __post_init__(self) -> None:
        if self.source not in IMPORT_SOURCES:
            raise ValueError(f"source: '{self.source}' is not one of {', '.join(IMPORT_SOURCES)}")
        other = ("iteration", "ply_sh_degree") if self.source == "vhap" else ("tracking", "epoch")
        given = [n for n in other if getattr(self, n) is not None]
        if given:
            raise ValueError(f"{' / '.join(given)}: not an option of --from {self.source}")
        if self.ply_sh_degree is not None and not 0 <= self.ply_sh_degree <= 3:
            raise ValueError(f"ply_sh_degree: must be 0..3, got {self.ply_sh_degree}")
        if self.participant < 0:
            raise ValueError(f"participant: must be >= 0, got {self.participant}")

    def options(self) -> dict[str, Any]:
        """The keyword options of :func:`pipelines.importers.import_participant` for ``source``."""
        names = ("tracking", "epoch") if self.source == "vhap" else ("iteration", "ply_sh_degree")
        return {n: getattr(self, n) for n in names}


@dataclass
class DemoJob:
    """``pointillist demo``: the end-to-end demo on the embedded default (``make demo``).

    Attributes:
        out: output folder.
        identities: synthetic participants.
        timesteps: frames per sequence of the synthetic capture.
        train_steps: optimisation steps of the tiny AR model.
        flame: FLAME model file (default: the demo head; also ``POINTILLIST_FLAME_MODEL``).
    """

    out: str = "out/demo"
    identities: int = 1
    timesteps: int = 6
    train_steps: int = 120
    flame: str | None = None

    def __post_init__(self) -> None:
        for n in ("identities", "timesteps", "train_steps"):
            if getattr(self, n) < 1:
                raise ValueError(f"{n}: must be >= 1, got {getattr(self, n)}")


@dataclass(kw_only=True)
class DemoCaptureJob(SyntheticCaptureConfig):
    """``pointillist demo-capture``: the synthetic capture in the NeRSemble v2 layout; every
    field of :class:`~pointillist_data.capture.synthetic_config.SyntheticCaptureConfig` plus where
    it goes and the FLAME model.

    Attributes:
        out: folder for the NeRSemble-layout capture.
        flame: FLAME model file (default: the demo head; also ``POINTILLIST_FLAME_MODEL``).
    """

    out: str
    flame: str | None = None

    def capture_config(self) -> SyntheticCaptureConfig:
        """The :class:`SyntheticCaptureConfig` of these fields (without ``out`` and ``flame``)."""
        return SyntheticCaptureConfig(**{f.name: getattr(self, f.name) for f in fields(SyntheticCaptureConfig)
                                         if f.init})


@dataclass
class FlameInfoJob:
    """``pointillist flame info``: sizes, landmark sets and licence note of a FLAME file.

    Attributes:
        path: FLAME file (the argument ``PATH``; default: the demo head).
    """

    path: str | None = None


@dataclass
class FlamePreviewJob:
    """``pointillist flame preview``: the mesh neutral and in a few expressions and poses.

    Attributes:
        path: FLAME file (the argument ``PATH``; default: the demo head).
        out: PNG to write.
        size: panel size in pixels.
    """

    path: str | None = None
    out: str = "head.png"
    size: int = 256

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"size: must be >= 16 pixels, got {self.size}")


@dataclass
class FlameBuildDemoJob:
    """``pointillist flame build-demo``: the demo head as a FLAME-format ``.npz``.

    Attributes:
        out: asset ``.npz`` to write.
        seed: seed recorded in the asset's metadata.
    """

    out: str
    seed: int = 0
