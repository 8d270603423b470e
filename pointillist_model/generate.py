"""Grammar-constrained sampling of point-cloud token sequences (the one generation API).

:func:`sample_points` decodes one sequence per context row with the static, rolling KV cache
of :class:`~pointillist_model.decode.StaticKVDecoder` (attention window and rotary positions
as in training, see that module). Every step is one fixed-shape computation:

* the decoder step for all rows;
* logits for the phase's sub-vocabulary only (coordinates and ``end`` for x / y / z, faces for
  bindings: rows advance in lockstep modulo 4, see :mod:`pointillist_model.grammar`);
* the grammar as one interval per row (:class:`~pointillist_model.grammar.PointGrammar`), so
  every output decodes (:func:`pointillist_data.tokens.decode` with the order check);
* greedy choice, or temperature / top-k / top-p sampling by inverse CDF with one uniform
  number per row (drawn from ``generator`` outside the step).

Batches: ``batch_size`` rows decode together; when a row's sequence ends, the next waiting
context takes the row (refill), and once none waits the batch is compacted to its unfinished
rows, so no step is spent on a finished avatar beyond the ``sync_every`` steps between checks.

Execution, in blocks of four steps (one point per row): ``graph="cuda_graph"`` (default on
CUDA) captures a block in one CUDA graph (one launch per point); ``graph="compile"`` uses
``torch.compile`` on the block (mode ``reduce-overhead`` on CUDA; on the CPU, inductor's C++
kernels called from its C++ wrapper, compiled once per shape and process, with the attention
written out (:func:`~pointillist_model.decode.single_query_attention`) so that it fuses into
those kernels: together 1.5-1.9x faster than SDPA calls from the Python wrapper, tokens
identical); ``graph="eager"`` runs the steps op by op and
adds two shortcuts graphs cannot take: inside the first window it attends only to the slots
filled so far, and once every row is past it, without a mask. All modes give the same tokens.
``graph="auto"`` picks CUDA graphs on CUDA; on the CPU, ``compile`` for long generations (at
least :data:`AUTO_COMPILE_MIN_TOKENS` tokens in all, where the compilation, about 5 s with a
warm inductor cache and 25-40 s cold, is repaid: the tiny preset decodes 4-7x faster
compiled) and ``eager`` otherwise. The length is the bound ``contexts x 4 x max_points``, so
a generation that ends early (an undertrained model) may still pay the compilation; pass
``graph="eager"`` for short runs with a large ``max_points``. A compilation that fails (no C++
compiler) falls back to ``eager`` with a warning.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from pointillist_data.progress import NULL_PROGRESS, Progress
from pointillist_data.tokens import FRAME

from .config import GRAPH_MODES, SamplingConfig
from .decode import StaticKVDecoder, _linear
from .grammar import PointGrammar

__all__ = ["GenerationResult", "SamplingConfig", "sample_points", "choose_tokens", "GRAPH_MODES", "AUTO_COMPILE_MIN_TOKENS",
           "auto_graph_mode"]

AUTO_COMPILE_MIN_TOKENS = 40_000  # contexts x 4 x max_points from which graph="auto" compiles on the CPU
BLOCK_PHASES = (1, 2, 3, 0)  # phases of steps 4n .. 4n + 3 (the token after position p has phase (p + 1) mod 4)


@dataclass
class GenerationResult:
    """``tokens``: one ``(4N + 8,)`` int64 sequence per context row (CPU); ``hidden``: per row
    the ``(4N, dim)`` final hidden states at its point tokens (the hidden state computed when
    that token was the input; inputs of the Gaussian decoder), model dtype, CPU, empty when
    not asked for; ``seconds``: decoding wall time; ``steps``: decode steps run;
    ``timeline``: ``(steps, seconds)`` at every check for finished rows; ``compile_seconds``:
    the part of ``seconds`` spent in the first block of each compiled batch shape (compiling
    it, or loading it from inductor's cache, plus that one block)."""

    tokens: list[Tensor]
    hidden: list[Tensor] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0
    timeline: list[tuple[int, float]] = field(default_factory=list)
    compile_seconds: float = 0.0

    @property
    def generated_tokens(self) -> int:
        """Tokens produced after the 4 start tokens, over all rows."""
        return sum(len(t) - FRAME for t in self.tokens)

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of wall time, compilation included."""
        return self.generated_tokens / self.seconds if self.seconds > 0 else float("nan")

    @property
    def decode_tokens_per_s(self) -> float:
        """Generated tokens per second once compiled (``seconds - compile_seconds``)."""
        dt = self.seconds - self.compile_seconds
        return self.generated_tokens / dt if dt > 0 else float("nan")


def choose_tokens(lg: Tensor, u: Tensor | None, greedy: bool = False, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None, static: bool = True) -> Tensor:
    """Pick one index per row of masked logits ``lg (B, W)`` float32 (``-inf`` = illegal).

    Greedy: the arg-max. Otherwise: keep the ``top_k`` largest, then the nucleus of mass
    ``top_p`` (a candidate is dropped when the candidates ranked above it already hold more
    than ``top_p`` of the probability, renormalised over the top-k when set), divide by
    ``temperature`` and draw by inverse CDF with the uniforms ``u (B,)`` in ``[0, 1)`` (over
    the candidates by decreasing logit when filtered, in vocabulary order otherwise).

    ``static=False`` allows a data-dependent shortcut for top-p alone (the nucleus found among
    the 64 most likely candidates when they hold more than ``top_p``, else a full sort; the
    same set either way), which CUDA graphs cannot capture.
    """
    if greedy:
        return lg.argmax(-1)
    W = lg.shape[-1]
    nucleus = top_p is not None and top_p < 1.0
    idx = None
    if top_k and top_k < W:
        vals, idx = lg.topk(top_k, -1)
        lse = vals.logsumexp(-1, keepdim=True)
    elif nucleus:
        lse = lg.logsumexp(-1, keepdim=True)
        vals = None
        if not static and W > 64:
            vals, idx = lg.topk(64, -1)
            held = (vals - lse).exp().sum(-1) > top_p
            if not bool((held | ~lse[:, 0].isfinite()).all()):  # rows without a legal token don't count
                vals = None
        if vals is None:
            vals, idx = lg.sort(-1, descending=True)
    else:
        vals = lg
    if nucleus:
        p = (vals - lse).exp()
        vals = vals.masked_fill(p.cumsum(-1) - p > top_p, -float("inf"))
    probs = (vals / max(temperature, 1e-6)).softmax(-1)
    cdf = probs.cumsum(-1)
    j = torch.searchsorted(cdf, u[:, None] * cdf[:, -1:], right=True).clamp_max(vals.shape[-1] - 1)
    # a uniform rounding onto the total mass must not land on a zero-probability tail entry
    j = torch.where(probs.gather(1, j) > 0, j, probs.argmax(-1, keepdim=True))[:, 0]
    return idx.gather(1, j[:, None])[:, 0] if idx is not None else j


class _Engine(nn.Module):
    """Decoder + grammar + sampling + output buffers of ``rows`` sequences (all static)."""

    def __init__(self, model, rows: int, context_len: int, max_points: int, min_points: int, sampling: dict,
                 return_hidden: bool, static: bool, dtype=None, attention: str = "sdpa") -> None:
        super().__init__()
        v = model.config.vocab
        self.v, self.sampling, self.static, self.return_hidden = v, sampling, static, return_hidden
        self.dec = StaticKVDecoder(model, rows, context_len, dtype, attention)
        dev = self.dec.emb.device
        self.gram = PointGrammar(rows, v, dev, min_points, max_points)
        self.max_len = 2 * FRAME + 4 * max_points
        Wt, b = self.dec.logits_w, self.dec.logits_b  # (dim, vocab)
        nb, nf = v.num_bins, v.num_faces
        # sub-vocabularies: coordinates + end (phases 0-2; the one copy), faces (phase 3; a view)
        self.register_buffer("w_coord", torch.cat((Wt[:, :nb], Wt[:, v.end : v.end + 1]), 1), persistent=False)
        self.register_buffer("b_coord", None if b is None else torch.cat((b[:nb], b[v.end : v.end + 1])), persistent=False)
        self.register_buffer("w_face", Wt[:, nb : nb + nf], persistent=False)
        self.register_buffer("b_face", None if b is None else b[nb : nb + nf], persistent=False)
        self.register_buffer("ar_coord", torch.arange(nb + 1, device=dev), persistent=False)
        self.register_buffer("ar_face", torch.arange(nf, device=dev), persistent=False)
        self.register_buffer("tok", torch.full((rows,), v.start, device=dev), persistent=False)
        self.register_buffer("u", torch.zeros(4, rows, device=dev), persistent=False)  # uniforms of a block
        self.register_buffer("out_tok", torch.full((rows, self.max_len + 1), v.pad, device=dev), persistent=False)
        hid = torch.zeros(rows, self.max_len + 1, model.config.dim, dtype=self.dec.dtype, device=dev) \
            if return_hidden else None
        self.register_buffer("out_hid", hid, persistent=False)

    @torch.no_grad()
    def start(self, rows: list[int], context: Tensor) -> None:
        """Begin new sequences in ``rows`` for ``context (len(rows), N, dim)``."""
        r = torch.as_tensor(rows, device=self.tok.device)
        self.dec.set_context(r, context)
        self.gram.reset_rows(r)
        self.tok[r] = self.v.start
        self.out_tok[r] = self.v.pad
        self.out_tok[r, 0] = self.v.start

    @torch.no_grad()
    def select_rows(self, rows: list[int]) -> None:
        r = torch.as_tensor(rows, device=self.tok.device)
        self.dec.select_rows(r)
        self.gram.select_rows(r)
        for name in ("tok", "out_tok", "out_hid"):
            t = getattr(self, name)
            if t is not None:
                setattr(self, name, t.index_select(0, r))
        self.u = self.u.index_select(1, r)

    @torch.no_grad()
    def harvest(self, row: int) -> tuple[Tensor, Tensor | None]:
        n = int(self.gram.n_points[row])
        # copies: the row's buffers are reused by the next sequence (.cpu() alone is a view on the CPU)
        toks = self.out_tok[row, : 2 * FRAME + 4 * n].to("cpu", copy=True)
        hid = self.out_hid[row, FRAME : FRAME + 4 * n].to("cpu", copy=True) if self.out_hid is not None else None
        return toks, hid

    @torch.no_grad()
    def block(self) -> None:
        """Four steps, phases 1, 2, 3, 0 (one point per row): the unit a CUDA graph or compiled
        function replays, so that launch and guard costs are paid once per point."""
        for k, phase in enumerate(BLOCK_PHASES):
            self.step(phase, k)

    def step(self, phase: int, k: int = 0, span: int | None = None, full: bool = False) -> None:
        """Feed every row its current token and choose the next (``phase`` = its position mod 4;
        ``k``: the row of :attr:`u` to draw with; ``span``, ``full``: see
        :meth:`StaticKVDecoder.forward`)."""
        g, v, nb = self.gram, self.v, self.v.num_bins
        h = self.dec(self.tok, g.pos, span, full)
        if phase < 3:
            lg, ar = _linear(h, self.w_coord, self.b_coord), self.ar_coord
        else:
            lg, ar = _linear(h, self.w_face, self.b_face), self.ar_face
        lg = lg if lg.dtype == torch.float32 else lg.float()
        lo, hi, end_ok = g.interval(phase)
        free, done = g.free(), g.done
        illegal = ar < lo[:, None]
        if hi is not None:
            illegal |= ar >= hi[:, None]
        if phase < 3:  # the end column
            illegal[:, nb] = True if end_ok is None else ~end_ok
        # forced rows (start / end / PAD) may have no legal entry; their choice is replaced below
        j = choose_tokens(lg.masked_fill(illegal, -float("inf")), self.u[k], static=self.static, **self.sampling)
        tok = j.masked_fill(j == nb, v.end) if phase < 3 else j + v.binding_offset
        tok = torch.where(free, tok, g.forced_token())
        rows = self.dec.row_ids
        self.out_tok[rows, (g.pos + 1).masked_fill_(done, self.max_len)] = tok  # finished rows: spare column
        if self.out_hid is not None:
            self.out_hid[rows, g.pos.masked_fill(done, self.max_len)] = h
        g.advance(phase, tok, free, done)
        self.tok.copy_(tok)


def eager_shortcuts(oldest: int, youngest: int, window: int) -> tuple[int | None, bool]:
    """``span`` and ``full`` of :meth:`StaticKVDecoder.forward` for an eager step whose oldest and
    youngest rows feed positions ``oldest`` and ``youngest``: inside the first window attend to
    the slots filled so far (in blocks of 64); once every row is past it, drop the mask."""
    return (None if oldest >= window else min(window, (oldest // 64 + 1) * 64)), youngest >= window - 1


class _Runner:
    """Runs blocks of four steps (:meth:`_Engine.block`) eagerly, from a CUDA graph, or compiled."""

    def __init__(self, eng: _Engine, mode: str) -> None:
        self.eng, self.mode = eng, mode
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = False
        self.compiled = False  # the compiled block has run at the current batch shape
        self.compile_seconds = 0.0  # spent in first calls at a new shape (compiling, or loading)
        self.fn = None
        if mode == "compile":
            if not eng.tok.is_cuda:  # see single_query_attention
                eng.dec.attention = "explicit"
            # CUDA: CUDA graphs replay the block; CPU: a C++ wrapper calls the kernels (the default
            # Python wrapper's per-kernel calls cost ~20 % of a tiny-preset step, BENCHMARKS.md)
            kw = {"mode": "reduce-overhead"} if eng.tok.is_cuda else {"options": {"cpp_wrapper": True}}
            self.fn = torch.compile(eng.block, fullgraph=True, dynamic=False, **kw)

    def reset(self) -> None:
        """Forget the captured graph and the compiled shape (the batch shrank)."""
        self.graph, self.warm, self.compiled = None, False, False

    def __call__(self, oldest: int, youngest: int) -> None:
        """One block; ``oldest`` / ``youngest``: the positions the oldest / youngest row feeds first."""
        if self.mode == "eager":
            for k, phase in enumerate(BLOCK_PHASES):
                self.eng.step(phase, k, *eager_shortcuts(oldest + k, youngest + k, self.eng.dec.window))
        elif self.mode == "compile":
            t0 = time.perf_counter()
            try:  # (re)compilation happens before the compiled block touches any buffer
                self.fn()
                if not self.compiled:
                    self.compile_seconds += time.perf_counter() - t0
                    self.compiled = True
            except Exception as e:  # inductor without a working C++ toolchain, or an unsupported op
                if self.eng.tok.is_cuda:
                    raise
                warnings.warn(f"torch.compile of the decode step failed ({type(e).__name__}: {str(e)[:200]}); "
                              "decoding eagerly (same tokens, slower)", stacklevel=2)
                self.mode, self.fn = "eager", None
                self.eng.dec.attention = "sdpa"
                self(oldest, youngest)
        else:
            if self.graph is None:
                if not self.warm:  # a real eager block initialises kernels and workspaces
                    self.warm = True
                    self.eng.block()
                    return
                self.graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(self.graph):
                    self.eng.block()
            self.graph.replay()


def auto_graph_mode(cuda: bool, tokens: int) -> str:
    """The execution mode ``graph="auto"`` picks for a generation of at most ``tokens`` tokens in
    all: ``cuda_graph`` on CUDA; on the CPU ``compile`` from :data:`AUTO_COMPILE_MIN_TOKENS`
    (the compilation is repaid), else ``eager``."""
    if cuda:
        return "cuda_graph"
    return "compile" if tokens >= AUTO_COMPILE_MIN_TOKENS else "eager"


@torch.no_grad()
def sample_points(model, context: Tensor, max_points: int = 1000, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, greedy: bool = False, generator: torch.Generator | None = None,
                  return_hidden: bool = True, min_points: int = 1, *, batch_size: int | None = None,
                  graph: str = "auto", sync_every: int | None = None, dtype: torch.dtype | None = None,
                  num_threads: int | str | None = "auto", progress: Progress | None = None) -> GenerationResult:
    """Sample one point-cloud token sequence per context row.

    Args:
        model: :class:`~pointillist_model.ar.PointillistAR` (eval mode is set here).
        context: ``(A, N, dim)`` conditioning (``model.context``), one avatar per row.
        max_points: longest cloud; ``end`` is forced after it.
        temperature, top_k, top_p: sampling controls (see :func:`choose_tokens`; ignored when
            ``greedy``).
        generator: source of the per-step uniforms (on the model's device).
        return_hidden: also return the final hidden states of the point tokens.
        min_points: ``end`` is not allowed before this many points.
        batch_size: rows decoded together (default: all ``A``); further contexts wait and take
            the rows of finished ones.
        graph: ``eager``, ``cuda_graph`` (CUDA only), ``compile`` (``torch.compile``; mode
            ``reduce-overhead`` on CUDA) or ``auto`` (:func:`auto_graph_mode`: ``cuda_graph``
            on CUDA; on the CPU ``compile`` for long generations, else ``eager``).
        sync_every: steps between checks for finished rows (multiple of 4; default 4 on the
            CPU, 32 on CUDA, where a check waits for the device).
        dtype: decode dtype (default: the model's; e.g. ``torch.bfloat16`` on CUDA).
        num_threads: torch's CPU intra-op threads while decoding (restored after); ``None``
            keeps the current setting; ``"auto"``: one thread when one row decodes, the current
            setting for batches. A one-row step is many microsecond-sized ops that a second
            thread only makes wait (on a loaded machine each parallel region can stall for a
            scheduler time slice); a batch's step is dominated by every row's attention over
            its KV cache, which splits over threads (tiny preset, batch 8, 2 cores: 7,600
            against 6,100 tokens/s with one thread eagerly).
        progress: reports tokens decoded.

    Returns:
        :class:`GenerationResult`, rows in context order; every sequence passes
        :func:`pointillist_data.tokens.check_grammar` with the order check.

    Raises:
        ValueError: ``max_points < 1``, an unknown ``graph``, a bad ``sync_every`` or
            ``num_threads``.
        UnsupportedDecoderError: the model's decoder uses options the decode path lacks.
    """
    if max_points < 1:
        raise ValueError("max_points must be >= 1")
    if graph not in GRAPH_MODES:
        raise ValueError(f"graph must be one of {GRAPH_MODES}, got {graph!r}")
    cuda = context.is_cuda
    mode = auto_graph_mode(cuda, context.shape[0] * 4 * max_points) if graph == "auto" else graph
    if mode == "cuda_graph" and not cuda:
        raise ValueError("graph='cuda_graph' needs the model and context on a CUDA device")
    sync_every = sync_every or (32 if cuda else 4)
    if sync_every % 4:
        raise ValueError(f"sync_every must be a multiple of 4, got {sync_every}")
    if isinstance(num_threads, str) and num_threads != "auto":
        raise ValueError(f"num_threads must be an int, None or 'auto', got {num_threads!r}")
    threads = torch.get_num_threads()
    if num_threads == "auto":
        num_threads = 1 if min(batch_size or context.shape[0], context.shape[0]) == 1 else None
    if num_threads is not None and not cuda:
        torch.set_num_threads(int(num_threads))
    try:
        return _generate(model, context, max_points, min_points, return_hidden, mode, sync_every, batch_size, dtype,
                         generator, progress, greedy=greedy, temperature=temperature, top_k=top_k, top_p=top_p)
    finally:
        torch.set_num_threads(threads)


def _generate(model, context, max_points, min_points, return_hidden, mode, sync_every, batch_size, dtype, generator,
              progress, **sampling) -> GenerationResult:
    """The decode loop of :func:`sample_points` (arguments checked there)."""
    model.eval()
    cuda, greedy = context.is_cuda, sampling["greedy"]
    A = context.shape[0]
    rows = min(batch_size or A, A)
    eng = _Engine(model, rows, context.shape[1], max_points, min_points, sampling, return_hidden,
                  static=mode != "eager", dtype=dtype)
    run = _Runner(eng, mode)
    queue = deque(range(A))
    owner = [queue.popleft() for _ in range(rows)]  # avatar decoded by each row (-1: none)
    begun = [0] * rows  # step at which each row's sequence began
    eng.start(list(range(rows)), context[owner])
    tokens: list[Tensor | None] = [None] * A
    hidden: list[Tensor | None] = [None] * A
    steps, timeline, t0 = 0, [], time.perf_counter()
    progress = progress or NULL_PROGRESS
    with progress.task(f"generating {A} point cloud(s), tokens") as task:
        while True:
            for _ in range(sync_every // 4):
                if not greedy:
                    eng.u.uniform_(generator=generator)
                if run.mode == "compile" and not run.compiled:
                    progress.log(f"compiling the decode step for {eng.dec.rows} row(s) (once per batch size; "
                                 "inductor's cache keeps it for later runs)")
                run(steps - min(begun), steps - max(begun))
                steps += 4
            done = eng.gram.done.tolist()
            timeline.append((steps, time.perf_counter() - t0))
            n = sync_every * sum(a >= 0 for a in owner)
            # 4 tokens a point: the points so far, whatever the avatars' lengths
            task.advance(n, info=f"~{(int(task.completed) + n) // 4} points, {A - len(queue)}/{A} avatar(s) started")
            fresh = []
            for r, a in enumerate(owner):
                if a >= 0 and done[r]:
                    tokens[a], hidden[a] = eng.harvest(r)
                    owner[r] = queue.popleft() if queue else -1
                    if owner[r] >= 0:
                        fresh.append(r)
            if fresh:  # steps is a multiple of 4 here, so new rows join in phase
                eng.start(fresh, context[[owner[r] for r in fresh]])
                for r in fresh:
                    begun[r] = steps
            live = [r for r, a in enumerate(owner) if a >= 0]
            if not live:
                break
            # each new batch size costs a capture / compile: graphs shrink by powers of two
            size = len(live) if run.mode == "eager" else 1 << (len(live) - 1).bit_length()
            if size < len(owner):
                keep = live + [r for r, a in enumerate(owner) if a < 0][: size - len(live)]
                eng.select_rows(keep)
                owner = [owner[r] for r in keep]
                begun = [begun[r] for r in keep]
                run.reset()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return GenerationResult(tokens, hidden if return_hidden else [], seconds, steps, timeline, run.compile_seconds)
