"""Evaluation metrics of the paper's Tables 1 and 2 (section 5.1 "Evaluation Metrics").

* :mod:`.image`: PSNR, SSIM (pytorch-msssim) and LPIPS (:mod:`pointillist_model.lpips`);
* :mod:`.inception` and :mod:`.fid`: Fréchet Inception Distance (Heusel et al. 2017) with
  Inception v3 pool features from a local weight file;
* :mod:`.clip`: the CLIP identity score (cosine similarity of CLIP image embeddings);
* :mod:`.face`: AKD (MediaPipe face-mesh landmarks) and APD (head pose from those landmarks).

Every network-based metric loads its weights from a local path and raises
:class:`MetricWeightsError` (a :class:`~pointillist_data.errors.PointillistError`) without one;
nothing is downloaded.
"""

from __future__ import annotations

from pointillist_data.errors import PointillistError

__all__ = ["MetricWeightsError", "MetricInputError"]


class MetricWeightsError(PointillistError, ValueError):
    """A network metric's weights are missing or do not fit its network."""


class MetricInputError(PointillistError, ValueError):
    """Images or features a metric cannot use (shapes, too few samples)."""


class MetricUnavailableError(PointillistError, RuntimeError):
    """A metric's optional dependency is not installed (the message names the extra)."""


__all__ += ["MetricUnavailableError"]
