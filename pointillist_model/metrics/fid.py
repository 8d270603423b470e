"""Fréchet Inception Distance (Heusel et al. 2017, "GANs trained by a two time-scale update
rule converge to a local Nash equilibrium").

``FID = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` between Gaussians fitted to the
pool features of two image sets (unbiased covariance, ``ddof=1``), in float64 with SciPy's
matrix square root; when the product is near-singular (fewer images than feature dimensions,
the usual case for small test sets) ``eps`` is added to both diagonals first, as pytorch-fid
does. FID from fewer than a few thousand images is biased upwards; compare only figures made
with the same number of images.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

from . import MetricInputError

__all__ = ["features", "gaussian_stats", "frechet_distance", "fid_from_features", "fid"]


@torch.no_grad()
def features(net, images, batch: int = 16) -> np.ndarray:
    """Pool features ``(B, F)`` float64 of ``images`` (anything :func:`.image.to_nchw` takes)
    through ``net`` (``(B, 3, H, W)`` in [0, 1] -> ``(B, F)``, e.g. :class:`.inception.InceptionV3`)."""
    from .image import to_nchw

    x = to_nchw(images)
    dev = next(net.parameters()).device
    return torch.cat([net(x[i:i + batch].to(dev)).double().cpu() for i in range(0, len(x), batch)]).numpy()


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(F,)`` and unbiased covariance ``(F, F)`` of ``feats (N, F)``.

    Raises:
        MetricInputError: fewer than 2 samples.
    """
    f = np.asarray(feats, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise MetricInputError(f"FID: needs at least 2 feature vectors (N, F), got shape {f.shape}")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance of ``N(mu_a, cov_a)`` and ``N(mu_b, cov_b)`` (squared feature units)."""
    mu_a, mu_b = np.atleast_1d(mu_a).astype(np.float64), np.atleast_1d(mu_b).astype(np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    with warnings.catch_warnings():  # singular products are expected (few images) and handled below
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        off = np.eye(len(cov_a)) * eps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            covmean = scipy.linalg.sqrtm((cov_a + off) @ (cov_b + off))
    covmean = np.real(covmean)  # rounding leaves a tiny imaginary part
    d = mu_a - mu_b
    return float(max(d @ d + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean), 0.0))


def fid_from_features(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """FID of two feature sets ``(N_a, F)`` and ``(N_b, F)``."""
    return frechet_distance(*gaussian_stats(feats_a), *gaussian_stats(feats_b))


def fid(net, images_a, images_b, batch: int = 16) -> float:
    """FID of two image sets through ``net`` (:func:`.inception.load_inception` for the real metric)."""
    return fid_from_features(features(net, images_a, batch), features(net, images_b, batch))
