"""The frozen AR model's features for the decoder: teacher-forced hidden states, cached on disk.

Decoder training (paper section 4.4.2) needs, per identity, the final hidden states of every
point token and the AR model's conditioning context. The stored token sequence is
teacher-forced through the AR model in windows of ``window`` tokens (its ``max_seq_len``)
starting on point boundaries every ``stride`` tokens; each token takes its hidden state
from the first window holding it past the previous window's end, so every token sees at
least ``window - stride`` tokens of context (the whole prefix when the sequence fits one
window, which is then exactly what generation computes). As the AR model is frozen, the
results are cached on disk under the SHA-256 of its checkpoint file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from pointillist_data.fileio import atomic_save_npy
from pointillist_data.progress import NULL_PROGRESS, Progress
from pointillist_data.tokens import FRAME

__all__ = ["checkpoint_hash", "teacher_forced_hidden", "HiddenCache"]


def checkpoint_hash(path: str | Path) -> str:
    """First 16 hex digits of the SHA-256 of a checkpoint file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()[:16]


@torch.no_grad()
def teacher_forced_hidden(model, tokens: Tensor, context: Tensor, window: int | None = None,
                          stride: int | None = None, batch: int = 8) -> Tensor:
    """Final hidden states of the point tokens of one sequence.

    Args:
        model: a :class:`~pointillist_model.ar.PointillistAR` (frozen; eval mode is set).
        tokens: ``(4N + 8,)`` int token sequence (start, points, end).
        context: ``(1, M, dim)`` conditioning context.
        window: tokens per window (default ``model.config.max_seq_len``); multiple of 4.
        stride: tokens between window starts (default ``window // 2``); multiple of 4.
        batch: windows per forward pass.

    Returns:
        ``(4N, dim)`` float32: the hidden state *at* each point token (the one computed with
        that token as input), the quantity :func:`pointillist_model.generate.sample_points`
        returns as ``hidden``.

    Raises:
        ValueError: window or stride not positive multiples of 4, or ``stride > window``.
    """
    model.eval()
    L = window or model.config.max_seq_len
    L -= L % 4
    S = stride or max(4, (L // 2) // 4 * 4)
    if L <= 0 or S <= 0 or S % 4 or S > L:
        raise ValueError(f"teacher_forced_hidden: window {L} and stride {S} must be multiples of 4 with stride <= window")
    tokens = torch.as_tensor(tokens, dtype=torch.long, device=context.device)
    n = len(tokens)
    starts = [0]
    while starts[-1] + L < n:
        starts.append(starts[-1] + S)
    pad = model.config.vocab.pad
    out = torch.empty(n, model.config.dim, device=context.device)
    for b0 in range(0, len(starts), batch):
        chunk = starts[b0:b0 + batch]
        x = torch.full((len(chunk), L), pad, dtype=torch.long, device=context.device)
        for j, s in enumerate(chunk):
            seg = tokens[s:s + L]
            x[j, :len(seg)] = seg  # causal: padding after the segment changes nothing in it
        with torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=context.device.type == "cuda"):
            h = model.net(x, context=context.expand(len(chunk), -1, -1), return_embeddings=True)
        for j, s in enumerate(chunk):
            lo = 0 if s == 0 else s - S + L  # the previous window ended there
            hi = min(s + L, n)
            out[lo:hi] = h[j, lo - s:hi - s].float()
    return out[FRAME:n - FRAME]


class HiddenCache:
    """Per (identity, conditioning crop): hidden states ``(4N, dim)`` float16 and context
    ``(M, dim)`` float32, as ``<root>/<checkpoint hash>/<subject>_<crop>.{hidden,context}.npy``
    (``.npy`` so that readers memory-map them and touch only the rows they use).

    Args:
        root: cache folder.
        key: the AR checkpoint's :func:`checkpoint_hash`.
    """

    def __init__(self, root: str | Path, key: str) -> None:
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = key

    def _paths(self, subject: str, crop: int) -> tuple[Path, Path]:
        return self.dir / f"{subject}_{crop}.hidden.npy", self.dir / f"{subject}_{crop}.context.npy"

    def has(self, subject: str, crop: int) -> bool:
        return self._paths(subject, crop)[1].exists()  # the context is written last

    def get(self, subject: str, crop: int) -> tuple[np.ndarray | None, np.ndarray]:
        """``(hidden (4N, dim) float16 memory-mapped, or None; context (M, dim) float32)``."""
        hp, cp = self._paths(subject, crop)
        return (np.load(hp, mmap_mode="r") if hp.exists() else None), np.load(cp)

    def put(self, subject: str, crop: int, hidden: Tensor | None, context: Tensor) -> None:
        """Store atomically (hidden as float16, halving the disk: 245 MB for 30k points at dim 1024)."""
        hp, cp = self._paths(subject, crop)
        if hidden is not None:
            atomic_save_npy(hp, hidden.detach().cpu().numpy().astype(np.float16))
        atomic_save_npy(cp, context.detach().float().cpu().numpy())

    def fill(self, model, items: list[tuple[str, int, np.ndarray, np.ndarray, Tensor]], with_hidden: bool = True,
             window: int | None = None, stride: int | None = None, progress: Progress | None = None) -> int:
        """Compute the missing entries.

        Args:
            model: the frozen AR model.
            items: ``(subject, crop, tokens (4N + 8,), image (H, W, 3) uint8, flame_vertices (V, 3))``.
            with_hidden: also teacher-force the hidden states (not needed for ``inputs="position"``).

        Returns:
            The number of entries computed.
        """
        progress = progress or NULL_PROGRESS
        todo = [it for it in items if not self.has(it[0], it[1])]
        dev = next(model.parameters()).device
        with progress.task("AR features (teacher forcing)", total=len(todo)) as task, torch.no_grad():
            for subject, crop, tokens, image, verts in todo:
                ctx = model.context(torch.as_tensor(image, device=dev)[None], verts.to(dev)[None])
                hid = teacher_forced_hidden(model, torch.as_tensor(tokens), ctx, window, stride) if with_hidden else None
                self.put(subject, crop, hid, ctx[0])
                task.advance(info=f"{subject}/{crop}")
        return len(todo)
