"""Generation: the static-KV-cache decode path against x-transformers' own forward pass, the
grammar against a brute-force reading of the token spec, sampling, batching, the GPU script."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pointillist_data.tokens import FRAME, Vocabulary, decode
from pointillist_model.ar import PRESETS, ARConfig, PointillistAR
from pointillist_model.decode import StaticKVDecoder
from pointillist_model.generate import choose_tokens, sample_points
from pointillist_model.grammar import PointGrammar

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # decode steps are microsecond-sized ops: a second intra-op thread only adds waits (and on a
    # shared, loaded machine each parallel region can stall for a scheduler time slice)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(**kw) -> PointillistAR:
    torch.manual_seed(0)
    return PointillistAR(ARConfig(**{**PRESETS["tiny"].to_dict(), **kw})).eval()


def _context(model, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randint(0, 255, (B, 32, 32, 3), generator=g, dtype=torch.uint8)
    verts = torch.randn(B, 400, 3, generator=g) * 0.1
    with torch.no_grad():
        return model.context(imgs, verts)


def _band(n: int, window: int) -> torch.Tensor:
    """The sliding-window mask: query i sees keys j with 0 <= i - j < window (True = attend)."""
    i = torch.arange(n)
    d = i[:, None] - i[None]
    return (d >= 0) & (d < window)


def reference_legal(seq: list[int], v: Vocabulary, min_points: int, max_points: int) -> np.ndarray:
    """Legal next tokens after ``seq``, read from the spec by brute force: a token is legal when
    the prefix can still be completed into ``S*4 (x y z b)* E*4`` with points non-decreasing in
    (y, z, x, face), between ``min_points`` and ``max_points`` points."""
    legal = np.zeros(v.size, bool)
    if len(seq) < FRAME:
        legal[v.start] = True
        return legal
    ends = sum(t == v.end for t in seq)
    if ends:
        legal[v.pad if ends >= FRAME else v.end] = True
        return legal
    body = list(seq[FRAME:])
    k, n = len(body) % 4, len(body) // 4
    if k == 0 and n >= min_points:
        legal[v.end] = True
    if k == 0 and n >= max_points:
        return legal
    nb, nf = v.num_bins, v.num_faces
    cands = np.arange(nb) if k < 3 else np.arange(nb, nb + nf)
    if n == 0:
        legal[cands] = True
        return legal
    px, py, pz, pb = body[4 * (n - 1) : 4 * n]
    # the candidate's best completion: every later slot at its largest value
    best = [nb - 1, nb - 1, nb - 1, nb + nf - 1]
    x, y, z, b = (np.full(len(cands), t) for t in body[4 * n :] + [0] + best[k + 1 :])
    (x, y, z, b)[k][:] = cands
    # (y, z, x, b) >= (py, pz, px, pb) lexicographically
    legal[cands] = (y > py) | ((y == py) & ((z > pz) | ((z == pz) & ((x > px) | ((x == px) & (b >= pb))))))
    return legal


def check_greedy(model, tokens: torch.Tensor, hidden: torch.Tensor, ctx, min_points, max_points, window=None):
    """``tokens`` is what greedy decoding with x-transformers' full forward pass (no cache; with
    the sliding-window mask when ``window`` is given) produces: by causality one forward pass over
    the finished sequence gives every step's logits, and each token must be the arg-max of the
    legal ones at its prefix. ``hidden`` must be that pass's final hidden states at the points."""
    v, seq = model.config.vocab, tokens.tolist()
    kw = {"attn_mask": _band(len(seq), window)} if window else {}
    with torch.no_grad():
        logits, emb = model.net(tokens[None], context=ctx, return_logits_and_embeddings=True, **kw)
    for p in range(FRAME - 1, len(seq) - 1):
        legal = torch.from_numpy(reference_legal(seq[: p + 1], v, min_points, max_points))
        assert seq[p + 1] == int(torch.where(legal, logits[0, p], -float("inf")).argmax()), f"token {p + 1}"
    torch.testing.assert_close(hidden, emb[0, FRAME : len(seq) - FRAME], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_decode_step_matches_full_forward_and_sliding_window_mask(attention):
    # teacher forcing random tokens over 3 windows: inside the window the cached step equals the
    # plain causal forward; past it, the forward with the sliding-window mask (logits and hiddens)
    L, T = 24, 72
    model = _tiny(max_seq_len=L)
    ctx = _context(model)
    toks = torch.randint(0, model.config.vocab.size, (2, T), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        band_logits, band_h = model.net(toks, context=ctx, attn_mask=_band(T, L), return_logits_and_embeddings=True)
        plain = model.net(toks[:, :L], context=ctx)
        dec = StaticKVDecoder(model, 2, ctx.shape[1], attention=attention)
        dec.set_context(torch.arange(2), ctx)
        hs = torch.stack([dec(toks[:, p], torch.full((2,), p)) for p in range(T)], 1)
    logits = dec.logits(hs.reshape(2 * T, -1)).view(2, T, -1)
    torch.testing.assert_close(logits[:, :L], plain, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(logits, band_logits, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(hs, band_h, atol=2e-5, rtol=1e-5)
    # the mask matters past the window: the unmasked forward differs there
    full = model.net(toks, context=ctx)
    assert (full[:, L:] - band_logits[:, L:]).abs().max() > 1e-2


def _attention_reference(q, k, v, valid):
    """softmax(q k^T / sqrt(d)) v over the valid keys, one (row, head) at a time, in float64."""
    out = torch.empty(q.shape, dtype=torch.float64)
    for b in range(q.shape[0]):
        keep = valid[b, 0, 0] if valid is not None else torch.ones(k.shape[2], dtype=torch.bool)
        for h in range(q.shape[1]):
            kk, vv = k[b, h, keep].double(), v[b, h, keep].double()
            w = torch.softmax(kk @ q[b, h, 0].double() / q.shape[-1] ** 0.5, 0)
            out[b, h, 0] = w @ vv
    return out


@pytest.mark.parametrize("n,masked", [(1, False), (80, False), (1024, True), (37, True)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_single_query_attention_matches_sdpa_and_the_definition(n, masked, dtype):
    from pointillist_model.decode import single_query_attention

    g = torch.Generator().manual_seed(n)
    B, H, d = 3, 2, 32
    q, k, v = (torch.randn(B, H, m, d, generator=g).to(dtype) for m in (1, n, n))
    valid = None
    if masked:  # a prefix of the slots per row, one row with a single valid key (position 0)
        pos = torch.tensor([0, n // 2, n - 1])
        valid = torch.arange(n).view(1, 1, 1, n) <= pos.view(B, 1, 1, 1)
    out = single_query_attention(q, k, v, valid)
    assert out.shape == (B, H, 1, d) and out.dtype == dtype
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(out.double(), _attention_reference(q, k, v, valid), **tol)
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=valid)
    torch.testing.assert_close(out, sdpa, **tol)
    if masked:  # masked keys have no influence, whatever they hold
        k2, v2 = k.clone(), v.clone()
        k2.masked_fill_(~valid.transpose(-1, -2), 1e4)
        v2.masked_fill_(~valid.transpose(-1, -2), -1e4)
        assert torch.equal(single_query_attention(q, k2, v2, valid), out)


def test_rotary_positions_are_relative_at_any_offset():
    # the same tokens decoded from position 0 and from position 10^6 + 7 attend identically once
    # both windows hold only this sequence's keys (after depth + 1 windows): angles are exact
    L, T, far = 16, 64, 1_000_007
    model = _tiny(max_seq_len=L)
    ctx = _context(model, B=1).expand(2, -1, -1)
    toks = torch.randint(0, model.config.vocab.size, (T,), generator=torch.Generator().manual_seed(4))
    dec = StaticKVDecoder(model, 2, ctx.shape[1])
    dec.set_context(torch.arange(2), ctx)
    with torch.no_grad():
        hs = torch.stack([dec(toks[p].repeat(2), torch.tensor([p, far + p])) for p in range(T)], 1)
    settled = 3 * L
    torch.testing.assert_close(hs[1, settled:], hs[0, settled:], atol=2e-5, rtol=1e-5)


def test_greedy_inside_the_window_is_token_identical_to_the_full_forward_pass():
    model = _tiny()
    ctx = _context(model, B=3, seed=5)
    res = sample_points(model, ctx, max_points=30, min_points=1, greedy=True)
    for b in range(3):
        decode(res.tokens[b].numpy())
        check_greedy(model, res.tokens[b], res.hidden[b], ctx[b : b + 1], 1, 30)


def test_greedy_past_the_window_is_token_identical_to_the_sliding_window_forward():
    L = 32
    model = _tiny(max_seq_len=L)
    ctx = _context(model, B=2, seed=6)
    res = sample_points(model, ctx, max_points=36, min_points=36, greedy=True)
    for b in range(2):
        assert len(res.tokens[b]) == 8 + 4 * 36 > 4 * L
        check_greedy(model, res.tokens[b], res.hidden[b], ctx[b : b + 1], 36, 36, window=L)


def _grammar_mask(g: PointGrammar, phase: int, v: Vocabulary) -> np.ndarray:
    """The legal set the decode step derives from the grammar tables, over the full vocabulary."""
    lo, hi, end_ok = g.interval(phase)
    off, width = (v.binding_offset, v.num_faces) if phase == 3 else (0, v.num_bins)
    hi = torch.full_like(lo, width) if hi is None else hi
    ids = torch.arange(v.size)
    m = (ids >= lo[:, None] + off) & (ids < hi[:, None] + off)
    m[:, v.end] = False if end_ok is None else end_ok
    free = g.free()
    forced = torch.nn.functional.one_hot(g.forced_token(), v.size).bool()
    return torch.where(free[:, None], m, forced).numpy()


@pytest.mark.parametrize("min_points,max_points", [(1, 40), (12, 12)])
def test_grammar_tables_match_the_spec_on_random_walks(min_points, max_points):
    # 3 bins and 2 faces make equal coordinates, top bins and repeated points frequent
    v = Vocabulary(num_bins=3, num_faces=2)
    rows, rng = 16, np.random.default_rng(min_points)
    g = PointGrammar(rows, v, "cpu", min_points, max_points)
    seqs = [[v.start] for _ in range(rows)]
    for step in range(4 * max_points + 12):
        phase = (step + 1) % 4
        mask = _grammar_mask(g, phase, v)
        toks = []
        for r in range(rows):
            ref = reference_legal(seqs[r], v, min_points, max_points)
            np.testing.assert_array_equal(mask[r], ref, err_msg=f"row {r} after {seqs[r]}")
            legal = np.flatnonzero(ref)
            # favour the smallest legal value (ties with the previous point) and ending late
            pick = legal[0] if rng.random() < 0.5 else rng.choice(legal)
            if pick == v.end and len(legal) > 1 and rng.random() < 0.8:
                pick = legal[0]
            toks.append(int(pick))
        g.advance(phase, torch.tensor(toks))
        for r, t in enumerate(toks):
            if len(seqs[r]) < 2 * FRAME or seqs[r][-1] != v.pad:
                seqs[r].append(t)
    for s in seqs:
        s = [t for t in s if t != v.pad]
        pts, _ = decode(np.array(s), vocab=v)  # grammar, ranges and order
        assert min_points <= len(pts) <= max_points


def _reference_choice(lg: np.ndarray, u: float, temperature, top_k, top_p) -> int:
    """Top-k, then nucleus, then temperature and inverse CDF (over the candidates by decreasing
    logit when filtered, in vocabulary order otherwise), written from the definitions."""
    order = np.argsort(-lg, kind="stable") if top_k or top_p is not None else np.arange(len(lg))
    keep = order[: top_k or len(lg)]
    vals = lg[keep]
    if top_p is not None:
        p = np.exp(vals - vals.max())
        p /= p.sum()
        before = np.cumsum(p) - p
        keep, vals = keep[before <= top_p], vals[before <= top_p]
    q = np.exp((vals - vals.max()) / temperature)
    cdf = np.cumsum(q / q.sum())
    return int(keep[min(np.searchsorted(cdf, u * cdf[-1], side="right"), len(keep) - 1)])


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.7, 40, None), (1.3, None, 0.8),
                                                     (1.0, 100, 0.6), (1.0, None, 0.999)])
def test_sampling_matches_its_definition(temperature, top_k, top_p):
    g = torch.Generator().manual_seed(7)
    lg = torch.randn(64, 300, generator=g, dtype=torch.float64).float() * 3
    lg[:, 200:] = -float("inf")  # illegal tail, as the grammar leaves it
    lg[::2] *= 4  # peaked rows: the top-p shortcut applies to them
    u = torch.rand(64, generator=g)
    lg, u = lg.double(), u.double()  # float64 on both sides: no draw sits on a rounding boundary
    want = [_reference_choice(lg[i].numpy(), float(u[i]), temperature, top_k, top_p) for i in range(64)]
    for static in (True, False):
        got = choose_tokens(lg, u, temperature=temperature, top_k=top_k, top_p=top_p, static=static)
        assert got.tolist() == want, static
    assert torch.equal(choose_tokens(lg, u, greedy=True), lg.argmax(-1))


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (1.5, 5, None), (0.8, None, 0.9)])
def test_every_sampled_sequence_decodes(temperature, top_k, top_p):
    # a small vocabulary (8 bins, 5 faces) makes the order constraints bind often
    model = _tiny(num_bins=8, num_faces=5)
    ctx = _context(model, B=4, seed=1)
    res = sample_points(model, ctx, max_points=60, min_points=3, temperature=temperature, top_k=top_k, top_p=top_p,
                        generator=torch.Generator().manual_seed(2), batch_size=3)
    assert len(res.tokens) == 4 and res.steps > 0 and res.tokens_per_s > 0
    for t, h in zip(res.tokens, res.hidden, strict=True):
        pts, b = decode(t.numpy(), vocab=model.config.vocab)
        assert 3 <= len(pts) <= 60 and h.shape == (4 * len(pts), 64)


@pytest.mark.parametrize("window", [1024, 32])  # 32: rows refilled while others are past the window
def test_batched_refilled_and_compacted_decoding_equals_one_avatar_at_a_time(window):
    model = _tiny(max_seq_len=window)
    with torch.no_grad():  # a stronger end logit, so that greedy avatars end at different lengths
        model.net.to_logits.weight[model.config.vocab.end] *= 8
    for seed in range(3, 20):  # contexts whose greedy avatars end at different steps
        ctx = _context(model, B=5, seed=seed)
        alone = [sample_points(model, ctx[a : a + 1], max_points=24, greedy=True) for a in range(5)]
        lengths = {len(r.tokens[0]) for r in alone}
        if len(lengths) > 1:
            break
    assert len(lengths) > 1  # avatars end at different steps, so rows are refilled / compacted
    for bs in (2, 5):
        together = sample_points(model, ctx, max_points=24, greedy=True, batch_size=bs)
        for a in range(5):
            assert torch.equal(together.tokens[a], alone[a].tokens[0])
            torch.testing.assert_close(together.hidden[a], alone[a].hidden[0], atol=1e-5, rtol=1e-5)
        # no step beyond the longest avatar's (plus the check interval) once rows are free
        assert together.steps <= sum(len(r.tokens[0]) for r in alone) // bs + max(lengths) + 8


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_decode_block_traces_into_one_graph(attention):
    # what CUDA graphs / torch.compile(mode="reduce-overhead") need: no graph break, no host sync
    from pointillist_model.generate import _Engine

    model = _tiny(max_seq_len=32)
    ctx = _context(model, B=2)
    kw = dict(temperature=0.9, top_k=None, top_p=0.9, greedy=False)
    engines = [_Engine(model, 2, ctx.shape[1], 20, 1, kw, True, static=True, attention=attention) for _ in range(2)]
    for e in engines:
        e.start([0, 1], ctx)
    torch._dynamo.reset()
    traced = torch.compile(engines[1].block, backend="eager", fullgraph=True, dynamic=False)
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        engines[0].u.uniform_(generator=g)
        engines[1].u.copy_(engines[0].u)
        engines[0].block()
        traced()
    assert torch.equal(engines[0].out_tok, engines[1].out_tok)
    assert (engines[0].out_tok[:, FRAME + 4] != model.config.vocab.pad).all()  # points were drawn


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler")
def test_compiled_cpu_generation_gives_the_eager_tokens():
    # the path graph="auto" takes for an avatar on the CPU: inductor's C++ kernels and C++
    # wrapper, explicit single-query attention; a batch whose rows end at different steps
    import warnings

    model = _tiny(max_seq_len=32)
    with torch.no_grad():  # a stronger end logit, so that greedy avatars end at different lengths
        model.net.to_logits.weight[model.config.vocab.end] *= 8
    for seed in range(7, 30):  # contexts whose greedy avatars end at different steps
        ctx = _context(model, B=3, seed=seed)
        eager = sample_points(model, ctx, max_points=14, greedy=True, graph="eager")
        if len({len(t) for t in eager.tokens}) > 1:
            break
    assert len({len(t) for t in eager.tokens}) > 1  # rows finish apart: the batch is compacted
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="torch.compile of the decode step failed")
        res = sample_points(model, ctx, max_points=14, greedy=True, graph="compile")
    for a in range(3):
        assert torch.equal(res.tokens[a], eager.tokens[a])
        torch.testing.assert_close(res.hidden[a], eager.hidden[a], atol=1e-5, rtol=1e-5)
    # compiling (3 rows, then each smaller batch as rows finish) is accounted apart from decoding
    assert eager.compile_seconds == 0 and 0 < res.compile_seconds < res.seconds
    assert res.decode_tokens_per_s > res.tokens_per_s


def test_auto_mode_compiles_long_cpu_generations_only():
    from pointillist_model.generate import AUTO_COMPILE_MIN_TOKENS, auto_graph_mode

    assert auto_graph_mode(True, 8) == "cuda_graph"
    assert auto_graph_mode(False, AUTO_COMPILE_MIN_TOKENS - 1) == "eager"
    assert auto_graph_mode(False, AUTO_COMPILE_MIN_TOKENS) == "compile"
    # the CLI's default (30000 points) for one avatar is a long generation
    assert auto_graph_mode(False, 4 * 30000) == "compile"


def test_sample_points_auto_compiles_from_the_threshold(monkeypatch):
    import pointillist_model.generate as gen

    calls = []

    def recording_compile(fn, **kw):  # stands in for torch.compile: records, runs eagerly
        calls.append(kw)
        return fn

    model = _tiny(max_seq_len=32)
    ctx = _context(model, B=1, seed=4)
    eager = sample_points(model, ctx, max_points=10, greedy=True, graph="eager")
    monkeypatch.setattr(gen.torch, "compile", recording_compile)
    sample_points(model, ctx, max_points=10, greedy=True)  # 40 tokens: below the threshold
    assert calls == []
    monkeypatch.setattr(gen, "AUTO_COMPILE_MIN_TOKENS", 40)
    res = sample_points(model, ctx, max_points=10, greedy=True)
    assert len(calls) == 1 and calls[0]["fullgraph"] and torch.equal(res.tokens[0], eager.tokens[0])


def test_generate_config_rejects_bad_thread_counts():
    from pointillist_data.errors import InputError
    from pointillist_model.portrait import GenerateConfig

    for bad in ("two", 0, -1):
        with pytest.raises(InputError, match="num_threads"):
            GenerateConfig(num_threads=bad)
    for ok in (None, "auto", 2):
        GenerateConfig(num_threads=ok)


@pytest.mark.parametrize("config", ["generate", "avatar", "evaluate"])
@pytest.mark.parametrize("bad, where", [({"temperature": 0.0}, "temperature"), ({"top_p": 1.5}, "top_p"),
                                        ({"top_k": 0}, "top_k"), ({"min_points": 5, "max_points": 4}, "min_points"),
                                        ({"max_points": 0}, "max_points")])
def test_commands_that_sample_share_one_validated_sampling_config(config, bad, where):
    from pointillist_data.errors import ConfigError, InputError
    from pointillist_data.fileio import build_config
    from pointillist_model.avatar import AvatarConfig
    from pointillist_model.evaluate import EvalConfig
    from pointillist_model.generate import SamplingConfig
    from pointillist_model.portrait import GenerateConfig

    cls, own = {"generate": (GenerateConfig, {}), "avatar": (AvatarConfig, {}),
                "evaluate": (EvalConfig, {"store": "s/store.zarr", "decoder": "d.pt", "out": "o"})}[config]
    assert issubclass(cls, SamplingConfig)
    with pytest.raises(InputError, match=where):
        cls(**own, **bad)
    with pytest.raises(ConfigError, match=f"config.json: .*{where}"):
        build_config(cls, {**own, **bad}, "config.json")
    # JSON round trip of the shared and the command's own fields
    cfg = cls(**own, top_k=7, seed=3)
    assert build_config(cls, cfg.to_dict(), "config.json") == cfg


def test_failed_compilation_falls_back_to_eager_with_the_same_tokens(monkeypatch):
    # fault injection: a machine without a working C++ toolchain fails inside torch.compile's
    # first call; decoding goes on eagerly, with a warning, and gives the eager tokens
    import pointillist_model.generate as gen

    def broken_compile(fn, **kw):
        def call():
            raise RuntimeError("InductorError: no C++ compiler found")
        return call

    model = _tiny(max_seq_len=32)
    ctx = _context(model, B=2, seed=3)
    eager = sample_points(model, ctx, max_points=12, greedy=True, graph="eager")
    monkeypatch.setattr(gen.torch, "compile", broken_compile)
    with pytest.warns(UserWarning, match="torch.compile of the decode step failed"):
        res = sample_points(model, ctx, max_points=12, greedy=True, graph="compile")
    for a in range(2):
        assert torch.equal(res.tokens[a], eager.tokens[a])


def test_gpu_benchmark_script_smoke_mode_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_generate", ROOT / "benchmarks" / "gpu_generate.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "gpu.json"
    mod.main(["--smoke", "--out", str(out)])
    rec = json.loads(out.read_text())
    assert rec["smoke"] is True and rec["device"] == "cpu"
    for row in rec["runs"]:
        assert row["tokens_per_s"] > 0 and row["tokens_per_s_per_avatar"] > 0 and row["batch"] >= 1


def test_generate_points_command_reports_tokens_per_second(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from pipelines.cli import app
    from pointillist_data.tokens import DEFAULT_BOX

    model = _tiny()
    ck = tmp_path / "ck.pt"
    torch.save({"model": model.state_dict(), "model_config": model.config.to_dict(),
                "quant_box": DEFAULT_BOX.to_dict()}, ck)
    Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(tmp_path / "face.png")
    out = tmp_path / "gen"
    with pytest.warns(UserWarning, match="single-image FLAME fit failed"):  # no face: the mean shape
        r = CliRunner().invoke(app, ["generate-points", "--image", str(tmp_path / "face.png"), "--checkpoint", str(ck),
                                     "--out", str(out), "--num", "3", "--batch-size", "2", "--max-points", "20",
                                     "--min-points", "5"])
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "generation.json").read_text())
    assert f"{rec['tokens_per_s']:.0f} tokens/s" in r.output and rec["tokens_per_s"] > 0
    assert rec["compile_seconds"] == 0 and rec["decode_tokens_per_s"] == rec["tokens_per_s"]  # short: eager
    assert len(rec["avatars"]) == 3 and rec["generated_tokens"] == sum(a["tokens"] - 4 for a in rec["avatars"])
    for i, a in enumerate(rec["avatars"]):
        toks = np.load(out / f"tokens_{i}.npy")
        assert len(toks) == a["tokens"] and 5 <= a["points"] <= 20
        assert np.load(out / f"hidden_{i}.npy").shape == (a["points"], 4, 64)
    r = CliRunner().invoke(app, ["generate-points", "--image", str(tmp_path / "face.png"), "--checkpoint", str(ck),
                                 "--out", str(out), "--min-points", "50", "--max-points", "20"])
    # the error names the flags that set the values
    assert r.exit_code == 2 and "--max-points / --min-points: need 1 <= min_points <= max_points" in r.output


@pytest.mark.parametrize("option,message", [({"ff_glu": True}, "feed-forward"), ({"attn_qk_norm": True}, "qk_norm"),
                                            ({"rotary_xpos": True}, "rotary"), ({"attn_num_mem_kv": 2}, "num_mem_kv")])
def test_decoder_options_it_does_not_reproduce_are_refused(option, message):
    from x_transformers import Decoder, TransformerWrapper

    from pointillist_model.decode import UnsupportedDecoderError

    model = _tiny(max_seq_len=16)
    model.net = TransformerWrapper(num_tokens=model.config.vocab.size, max_seq_len=16, attn_layers=Decoder(
        dim=64, depth=1, heads=4, rotary_pos_emb=True, use_rmsnorm=True, cross_attend=True, **option))
    with pytest.raises(UnsupportedDecoderError, match=message):
        StaticKVDecoder(model, 1, 8)


def test_sample_points_rejects_bad_arguments():
    ctx = _context(_tiny(), B=1)
    with pytest.raises(ValueError, match="graph must be one of"):
        sample_points(_tiny(), ctx, graph="fast")
    with pytest.raises(ValueError, match="multiple of 4"):
        sample_points(_tiny(), ctx, sync_every=6)
    with pytest.raises(ValueError, match="CUDA device"):
        sample_points(_tiny(), ctx, graph="cuda_graph")
