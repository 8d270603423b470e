"""Every `pointillist` command through typer's CliRunner: the happy path on the synthetic
capture (each stage command chained as a user would), and bad input, which must end as one
`error: <where>: <problem>` line with exit code 2 and no traceback."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipelines.cli import app

GT = "{capture}/{pid}/ground_truth/{sequence}/landmark2d/GT"


def run(*args, ok=True):
    r = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert r.exit_code == 0, r.output + (r.stderr or "") + repr(r.exception)
    return r


def one_line_error(r, *words):
    """The result is a domain error: exit 2, `error: ...` naming what was wrong, no traceback."""
    err = r.stderr or r.output
    assert r.exit_code == 2, (r.exit_code, r.output, r.stderr, r.exception)
    assert "Traceback" not in err and "Traceback" not in r.output
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines[0].startswith("error: ") and len(lines) <= 2, lines  # the error and an optional hint
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit)


# ---------------------------------------------------------------------------- happy paths
@pytest.fixture(scope="module")
def chain(tiny_capture, tmp_path_factory):
    """landmarks -> track -> fit -> canonicalize -> tokenize -> shard, each by its command."""
    root, cfg = tiny_capture
    pid, seq = cfg.participants[0], cfg.sequence
    d = tmp_path_factory.mktemp("cli")
    src = GT.format(capture=root, pid=f"{pid:03d}", sequence=seq)
    lm = d / "landmarks"
    r_lm = run("landmarks", "--capture", root, "--participant", pid, "--sequence", seq, "--out", lm,
               "--detector", "files", "--from", src)
    r_tr = run("track", "--capture", root, "--participant", pid, "--sequence", seq, "--landmarks", lm,
               "--out", d / "track", "--iters", "40,10,2")
    fit_cfg = d / "fit.json"
    fit_cfg.write_text(json.dumps({"iterations": 6, "log_every": 2}))
    r_fit = run("fit", "--tracking", d / "track", "--out", d / "fit", "--config", fit_cfg)
    r_can = run("canonicalize", "--fit", d / "fit", "--out", d / "canonical.npz")
    r_tok = run("tokenize", "--canonical", d / "canonical.npz", "--subject", f"{pid:03d}", "--out", d / "sample.npz",
                "--capture", root, "--participant", pid, "--sequence", seq, "--image-size", 32)
    r_sh = run("shard", d / "sample.npz", "--out", d / "store.zarr")
    return {"dir": d, "root": root, "cfg": cfg, "out": [r_lm, r_tr, r_fit, r_can, r_tok, r_sh]}


def test_stage_commands_chain_into_a_valid_store(chain, demo_asset):
    from pointillist_data.portrait import frontal_portrait
    from pointillist_data.store.token_store import TokenStore

    d, cfg = chain["dir"], chain["cfg"]
    r_lm, r_tr, r_fit, r_can, r_tok, r_sh = chain["out"]
    assert len(list((d / "landmarks").glob("*/*.npz"))) == 16 and "16 camera(s)" in r_lm.output
    assert "tracked 2/2 frames" in r_tr.output and (d / "track" / "overlay.png").exists()
    assert "held-out camera PSNR" in r_fit.output and (d / "fit" / "point_cloud.ply").exists()
    assert "canonical points" in r_can.output and "1 sample(s) appended" in r_sh.output
    st = TokenStore.open(d / "store.zarr")
    # the vocabulary follows the FLAME asset (10144 faces with teeth), as in `run`
    assert st.vocab.num_faces == demo_asset.num_faces == 10144
    # the conditioning crop is `run`'s: the frontal camera's centred square, not a stretched frame
    ref = frontal_portrait(chain["root"], cfg.participants[0], cfg.sequence, 32)
    np.testing.assert_array_equal(st[0]["image"], ref)
    h, w = ref.shape[:2]
    assert h == w == 32
    r = run("validate", d / "store.zarr")
    assert "valid" in r.output
    # not a terminal: the checksum pass reports plain progress lines, counting every listed object
    n = len(json.loads((d / "store.zarr" / "manifest.json").read_text())["chunks"])
    assert re.search(rf"checksums .*: done {n}/{n} \(100 %\)", r.output), r.output
    r = run("inspect", d / "store.zarr", "--png", d / "inspect.png", "--sample", 0)
    assert Image.open(d / "inspect.png").size[0] > 400 and cfg.participants[0] and "points" in r.output


def test_overlay_shows_landmarks_and_errors(chain):
    img = np.asarray(Image.open(chain["dir"] / "track" / "overlay.png").convert("RGB")).astype(int)
    green = (img[..., 1] > 200) & (img[..., 0] < 90) & (img[..., 2] < 90)
    red = (img[..., 0] > 200) & (img[..., 1] < 90) & (img[..., 2] < 90)
    cyan = (img[..., 1] > 200) & (img[..., 2] > 200) & (img[..., 0] < 60)
    assert green.sum() > 50 and red.sum() > 50 and cyan.sum() > 200


def test_train_and_generate_commands(chain):
    d = chain["dir"]
    r = run("train-ar", "--store", d / "store.zarr", "--out", d / "ar", "--steps", 2, "--batch-size", 1,
            "--window", 64)
    assert "final loss" in r.output and (d / "ar" / "checkpoint.pt").exists()
    img = d / "portrait.png"
    Image.fromarray(np.full((40, 30, 3), 120, np.uint8)).save(img)
    r = run("generate-points", "--image", img, "--checkpoint", d / "ar" / "checkpoint.pt", "--out", d / "gen",
            "--max-points", 3)
    assert list((d / "gen").rglob("*.ply"))
    warned = [ln for ln in r.output.splitlines() if ln.startswith("warning:") and "degenerate cloud: " in ln]
    assert len(warned) == 1 and "(fewer than 1000)" in warned[0], r.output  # at most 3 points


def test_run_status_report_and_split(tiny_capture, tmp_path):
    root, cfg = tiny_capture
    pid = f"{cfg.participants[0]:03d}"
    out = tmp_path / "run"
    r = run("run", "--capture", root, "--out", out, "--participants", cfg.participants[0], "--landmarks",
            "files:" + GT, "--until", "landmarks", "--workers", 1)
    assert "participant" in r.output
    r = run("status", out)
    assert pid in r.output and "done" in r.output
    assert "store.zarr: absent" in r.output and "supervision.zarr: absent" in r.output
    report = (out / "report.md").read_text()
    assert report.splitlines()[2].startswith("| figure | value |")
    r = run("split", "--nersemble", root, "--out", tmp_path / "split.json", "--n-test", 1)
    split = json.loads((tmp_path / "split.json").read_text())
    assert len(split["test"]) == 1 and len(split["train"]) == len(cfg.participants) - 1


def test_flame_info_preview_build_demo_and_demo_capture(tmp_path, demo_asset):
    r = run("flame", "info")
    assert str(demo_asset.num_faces) in r.output and "no substitute for FLAME" in r.output
    out = tmp_path / "head.png"
    run("flame", "preview", "--out", out, "--size", 96)
    img = np.asarray(Image.open(out))
    assert img.shape[0] > 96 and img.std() > 10  # something was drawn
    r = run("flame", "build-demo", "--out", tmp_path / "head.npz")
    assert "10144 faces" in r.output
    r = run("flame", "info", tmp_path / "head.npz")
    assert "5143" in r.output
    r = run("demo-capture", "--out", tmp_path / "cap", "--timesteps", 1, "--scale", 0.02)
    assert (tmp_path / "cap" / "900" / "calibration" / "camera_params.json").exists()


# ---------------------------------------------------------------------------- bad input
@pytest.fixture()
def files(tmp_path):
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"tracking": {"global_iter": 3}}))
    top = tmp_path / "top.json"
    top.write_text(json.dumps({"trackin": {}}))
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{ not json")
    bad_flame = tmp_path / "x.npz"
    np.savez(bad_flame, v_template=np.zeros((3, 3)))
    afile = tmp_path / "a_file"
    afile.write_text("x")
    return {"typo": typo, "top": top, "bad_json": bad_json, "bad_flame": bad_flame, "file": afile, "dir": tmp_path}


# (arguments, what the error line must name)
BAD_INPUT = [
    (("validate", "/no/such/store.zarr"), "/no/such/store.zarr"),
    (("inspect", "/no/such/store.zarr"), "/no/such/store.zarr"),
    (("status", "/no/such/run"), "/no/such/run"),
    (("flame", "info", "/no/such/flame.pkl"), "/no/such/flame.pkl"),
    (("flame", "info", "{bad_flame}"), "x.npz [f]"),
    (("run", "--capture", "/no/such/capture", "--out", "{dir}/o"), "/no/such/capture"),
    (("run", "--capture", "{capture}", "--out", "{dir}/o", "--participants", "900,9o1"), "--participants"),
    (("run", "--capture", "{capture}", "--out", "{dir}/o", "--participants", "900", "--config", "{typo}"),
     "typo.json: 'tracking': unknown field(s) 'global_iter'"),
    (("run", "--capture", "{capture}", "--out", "{dir}/o", "--participants", "900", "--config", "{top}"),
     "top.json: unknown field(s) 'trackin'"),
    (("run", "--capture", "{capture}", "--out", "{dir}/o", "--participants", "900", "--config", "{bad_json}"),
     "bad.json"),
    (("run", "--capture", "{capture}", "--out", "{dir}/o", "--participants", "900", "--landmarks", "fils:x"),
     "--landmarks"),
    (("landmarks", "--capture", "{capture}", "--participant", "900", "--sequence", "EXP-1-head", "--out",
      "{dir}/l", "--detector", "files"), "--from"),
    (("landmarks", "--capture", "{capture}", "--participant", "123", "--sequence", "EXP-1-head", "--out", "{dir}/l"),
     "participant 123"),
    (("track", "--out", "{dir}/t", "--capture", "{capture}"), "--participant"),
    (("track", "--out", "{dir}/t", "--capture", "{capture}", "--participant", "900", "--sequence", "EXP-1-head",
      "--landmarks", "{dir}", "--iters", "1,2"), "--iters"),
    (("track", "--out", "{dir}/t", "--capture", "{capture}", "--participant", "900", "--sequence", "EXP-1-head",
      "--landmarks", "{dir}", "--config", "{bad_json}"), "bad.json"),
    (("fit", "--tracking", "/no/such/track", "--out", "{dir}/f"), "/no/such/track"),
    (("canonicalize", "--fit", "/no/such/fit", "--out", "{dir}/c.npz"), "/no/such/fit"),
    (("tokenize", "--canonical", "/no/such/canonical.npz", "--subject", "1", "--out", "{dir}/s.npz", "--image",
      "{file}"), "a_file"),
    (("tokenize", "--canonical", "{file}", "--subject", "1", "--out", "{dir}/s.npz"), "--image"),
    (("tokenize", "--canonical", "{file}", "--subject", "1", "--out", "{dir}/s.npz", "--image", "{file}",
      "--box", "1,2,3"), "--box"),
    (("shard", "/no/such/sample.npz", "--out", "{dir}/store.zarr"), "/no/such/sample.npz"),
    (("split", "--nersemble", "/no/such/nersemble"), "/no/such/nersemble"),
    (("train-ar", "--store", "/no/such/store.zarr", "--out", "{dir}/ar"), "/no/such/store.zarr"),
    (("generate-points", "--image", "/no/such/portrait.png", "--checkpoint", "/no/such/ckpt.pt", "--out", "{dir}/g"),
     "/no/such/"),
    (("demo", "--out", "{file}"), "a_file"),
    (("demo-capture", "--out", "{file}"), "a_file"),
]


@pytest.mark.parametrize("case,named", BAD_INPUT, ids=[f"{c[0]}-{i}" for i, (c, _) in enumerate(BAD_INPUT)])
def test_domain_errors_are_one_line_without_traceback(case, named, files, tiny_capture):
    root, _ = tiny_capture
    r = run(*[a.format(capture=root, **files) for a in case], ok=False)
    one_line_error(r, named)


@pytest.mark.parametrize("case", [
    ("run", "--capture", ".", "--out", "o", "--until", "trak"),
    ("run", "--capture", ".", "--out", "o", "--force", "fitt"),
    ("train-ar", "--store", "s", "--out", "o", "--preset", "huge"),
    ("landmarks", "--capture", ".", "--participant", "1", "--sequence", "s", "--out", "o", "--detector", "dlib"),
])
def test_choices_are_enums(case):
    r = run(*case, ok=False)
    assert r.exit_code == 2 and "Traceback" not in (r.stderr or "") + r.output
    assert "Invalid value" in (r.stderr or r.output)


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setenv("POINTILLIST_DEBUG", "1")
    r = CliRunner().invoke(app, ["validate", "/no/such/store.zarr"])
    assert r.exit_code != 0 and r.exception is not None and not isinstance(r.exception, SystemExit)


def test_progress_lines_when_not_a_terminal(chain):
    # CliRunner's output is not a terminal: the fit printed plain periodic lines, not bars
    r_fit = chain["out"][2]
    assert re.search(r"\[\s*\d+\.\d s\] fitting: started, 6 steps", r_fit.output)
    assert re.search(r"fitting: done 6/6 \(100 %\)", r_fit.output)
