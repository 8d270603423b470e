"""Configuration of the tracking stage (one dataclass, saved beside the outputs)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..fileio import JsonConfigMixin

__all__ = ["TrackingConfig", "cpu_defaults", "cuda_defaults", "PRESETS"]


@dataclass
class TrackingConfig(JsonConfigMixin):
    """FLAME tracking in VHAP's spirit: rigid init, sequential per-frame, then a global pass.

    Attributes:
        device: torch device ("cpu", "cuda").
        landmark_set: "auto" (from the landmark files: 68 -> ibug68, 468/478 -> mediapipe),
            "ibug68" or "mediapipe".
        rigid_iters: iterations of the rigid (rotation, translation) refinement after the
            Umeyama / look-at initialisation.
        first_frame_iters: iterations on the first frame (identity shape included).
        first_frame_lm_iters: Levenberg-Marquardt iterations in float64 after the first
            frame's Adam fit, on the same landmark term and priors (0 = none; skipped with
            landmarks in fewer than two cameras): Adam stops in the valley where a wrong
            identity shape and a wrong head pose fit the landmarks together, 2-3 mm off on
            the styled synthetic identities, under 1.7 mm with it (:mod:`.refine`).
        frame_iters: iterations per later frame (initialised from the previous frame).
        global_iters: iterations of the global pass over all frames.
        lr_pose: Adam learning rate of rotations, poses and translations.
        lr_shape: Adam learning rate of shape and expression coefficients.
        lr_offset: Adam learning rate of the static offset (metres).
        w_landmark: weight of the landmark reprojection term (squared error over image height^2).
        w_silhouette: weight of the silhouette term (rendered alpha vs foreground mask, L2).
        w_photometric: weight of the photometric term (rendered per-face colour vs image, L1).
        w_shape: L2 prior on identity coefficients (1e-4: with 2e-6 the first frame's
            refinement fits 1 px landmark noise into the shape, about 10 mm off).
        w_expr: L2 prior on expression coefficients.
        w_pose: L2 prior on neck, jaw and eye rotations.
        w_static_offset: L2 prior on the static offset (metres^2).
        w_laplacian: Laplacian smoothness of the static offset.
        w_temporal: smoothness of per-frame parameters between neighbouring frames.
        silhouette_band: pixels on each side of a mask's edge ignored by the silhouette term
            (and eroded away for the photometric term).
        optimize_static_offset: refine a per-vertex static offset in the global pass.
        render_cameras: cameras rendered per global iteration (a random subset; 0 = none).
        render_frames: frames rendered per global iteration.
        render_scale: image scale of the silhouette and photometric terms (<= 1).
        gaussians_per_face: Gaussians bound to each face for the mesh renderer.
        min_frames: fail the sequence when fewer usable frames remain.
        min_landmark_views: a frame needs landmarks from at least this many cameras.
        optimize_focal: refine a shared focal-length scale (monocular video).
        face_crop_size: monocular video only: side (pixels) of the square face crop the
            tracker works on (landmark, silhouette and photometric terms, frame cache,
            export), resampled from the frames read whatever their resolution (512:
            metrical-tracker's choice); 0 = the whole frame (:mod:`.face_crop`).
        face_crop_padding: monocular video only: margin on each side of the landmarks' box
            over the clip, as a fraction of the face's size (brows-to-chin landmarks need
            room for forehead, hair and ears).
        matting: how the silhouette term's foreground masks are made when the capture has no
            ``alpha_maps/``: ``threshold`` (fixed background subtraction, the default),
            ``background`` (shadow- and texture-aware), ``mediapipe`` (selfie segmentation,
            offline), ``rvm:<weights.pth>`` or ``bgmv2:<weights.pth>`` (user-supplied
            weights); see :mod:`pointillist_data.capture.matting`.
        seed: seed of the camera/frame subsets.
        checkpoint_every: global-pass iterations between checkpoints (0 = none); the first
            one, at the global pass's start, holds the sequential pass. A re-run continues
            from the last one with the result of an uninterrupted run
            (:mod:`pointillist_data.checkpoint`); not part of a stage's input hash.
        extra: free-form notes saved with the config (the tracker reads none of them).
    """

    device: str = "cpu"
    landmark_set: str = field(default="auto", metadata={"choices": ("auto", "ibug68", "mediapipe")})
    rigid_iters: int = 60
    first_frame_iters: int = 400
    first_frame_lm_iters: int = 10
    frame_iters: int = 120
    global_iters: int = 100
    lr_pose: float = 0.01
    lr_shape: float = 0.05
    lr_offset: float = 2e-4
    w_landmark: float = 1.0
    w_silhouette: float = 0.01
    w_photometric: float = 0.005
    w_shape: float = 1e-4
    w_expr: float = 2e-6
    w_pose: float = 1e-5
    w_static_offset: float = 1.0
    w_laplacian: float = 10.0
    w_temporal: float = 1e-4
    silhouette_band: int = 2
    optimize_static_offset: bool = True
    render_cameras: int = 3
    render_frames: int = 1
    render_scale: float = 1.0
    gaussians_per_face: int = 3
    min_frames: int = 1
    min_landmark_views: int = 1
    optimize_focal: bool = False
    face_crop_size: int = 512
    face_crop_padding: float = 0.5
    matting: str = "threshold"
    seed: int = 0
    checkpoint_every: int = 25
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_iters") and (not isinstance(v, int) or v < 0):
                raise ValueError(f"TrackingConfig.{f.name} must be a non-negative int, got {v!r}")
            if f.name.startswith(("w_", "lr_")) and v < 0:
                raise ValueError(f"TrackingConfig.{f.name} must be >= 0, got {v}")
        if self.landmark_set not in ("auto", "ibug68", "mediapipe"):
            raise ValueError(f"TrackingConfig.landmark_set must be auto, ibug68 or mediapipe, got {self.landmark_set!r}")
        if not 0 < self.render_scale <= 1:
            raise ValueError(f"TrackingConfig.render_scale must be in (0, 1], got {self.render_scale}")
        if self.gaussians_per_face not in (1, 3):
            raise ValueError("TrackingConfig.gaussians_per_face must be 1 or 3")
        if not isinstance(self.face_crop_size, int) or isinstance(self.face_crop_size, bool) \
                or not (self.face_crop_size == 0 or self.face_crop_size >= 64):
            raise ValueError(f"TrackingConfig.face_crop_size must be 0 (whole frame) or an int >= 64, "
                             f"got {self.face_crop_size!r}")
        if not 0 <= self.face_crop_padding <= 4:
            raise ValueError(f"TrackingConfig.face_crop_padding must be in [0, 4], got {self.face_crop_padding}")
        if self.min_frames < 1:
            raise ValueError("TrackingConfig.min_frames must be >= 1")
        from ..capture.matting import parse_matting  # scipy: only when a config is built

        parse_matting(self.matting)
        if not isinstance(self.checkpoint_every, int) or isinstance(self.checkpoint_every, bool) \
                or self.checkpoint_every < 0:
            raise ValueError(f"TrackingConfig.checkpoint_every must be an int >= 0 (0 = no checkpoints), "
                             f"got {self.checkpoint_every!r}")


def cpu_defaults(**kw) -> TrackingConfig:
    """The CPU budget: the dataclass defaults (hundreds of steps per frame, 3 cameras and one
    frame rendered per global iteration)."""
    return TrackingConfig(**kw)


def cuda_defaults(**kw) -> TrackingConfig:
    """Closer to VHAP's schedule on a GPU (VHAP ``vhap/config/base.py``: landmark
    initialisation stages and three photometric initialisation stages of 500 steps on the
    first frame, 50 landmark + 50 photometric steps per later frame, global passes of 30
    epochs over every frame); here 300 rigid steps, 1600 on the first frame, 100 per later frame
    and 3000 global iterations rendering 8 cameras x 4 frames each."""
    base = dict(device="cuda", rigid_iters=300, first_frame_iters=1600, frame_iters=100, global_iters=3000,
                render_cameras=8, render_frames=4)
    return TrackingConfig(**{**base, **kw})


# the budgets of pointillist_data.devices.resolve_device: what --device auto picks
PRESETS = {"cpu": cpu_defaults, "cuda": cuda_defaults}
