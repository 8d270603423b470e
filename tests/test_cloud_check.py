"""Degenerate generated clouds (issue 30 item 6): one check shared by ``generate-points`` and
``avatar``, its documented thresholds, and the turntable's banner instead of blank frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pointillist_data.errors import InputError
from pointillist_model.cloud_check import degenerate_cloud
from pointillist_model.config import AvatarConfig, GenerateConfig

CUBE = np.array([[x, y, z] for x in (-0.1, 0.1) for y in (-0.1, 0.1) for z in (-0.1, 0.1)])  # a 20 cm "head"


def test_too_few_points_is_degenerate():
    rng = np.random.default_rng(0)
    inside = rng.uniform(-0.1, 0.1, size=(34, 3))
    assert degenerate_cloud(inside, CUBE, 1000, 0.5, 0.05) == "degenerate cloud: 34 points (fewer than 1000)"
    assert degenerate_cloud(inside, CUBE, 34, 0.5, 0.05) is None  # the bound itself is enough


def test_points_far_outside_the_grown_box_are_degenerate():
    rng = np.random.default_rng(1)
    good = rng.uniform(-0.1, 0.1, size=(3000, 3))
    assert degenerate_cloud(good, CUBE, 1000, 0.5, 0.05) is None
    near = good.copy()
    near[:, 0] += 0.14  # 4 cm past the box: within the 5 cm margin
    assert degenerate_cloud(near, CUBE, 1000, 0.5, 0.05) is None
    far = good.copy()
    far[:2000, 0] += 0.5  # two thirds of the cloud half a metre away
    msg = degenerate_cloud(far, CUBE, 1000, 0.5, 0.05)
    assert msg is not None and msg.startswith("degenerate cloud: 3000 points, 67% outside") and "\n" not in msg
    assert degenerate_cloud(far, CUBE, 1000, 0.7, 0.05) is None  # fraction threshold respected


def test_thresholds_are_documented_validated_config_fields():
    from pipelines.config_cli import field_help

    for cls in (GenerateConfig, AvatarConfig):
        c = cls()
        assert (c.degenerate_min_points, c.degenerate_outside_fraction, c.degenerate_margin) == (1000, 0.5, 0.05)
        helps = field_help(cls)
        assert "fewer points" in helps["degenerate_min_points"] and "metres" in helps["degenerate_margin"]
    with pytest.raises(InputError, match="degenerate_outside_fraction"):
        AvatarConfig(degenerate_outside_fraction=1.5)
    with pytest.raises(InputError, match="degenerate_min_points"):
        GenerateConfig(degenerate_min_points=-1)


def _avatar(asset, n: int, seed: int = 0):
    """A hand-made avatar: ``n`` grey Gaussians on the template's faces (no training)."""
    from pointillist_data.animation import Animator
    from pointillist_data.flame.model import FlameModel
    from pointillist_model.avatar import Avatar
    from pointillist_model.decoder import DecodedGaussians

    rng = np.random.default_rng(seed)
    faces = rng.integers(0, asset.num_faces, size=n)
    b = rng.dirichlet(np.ones(3), size=n)
    pts = np.einsum("nk,nkd->nd", b, asset.v_template[asset.faces[faces]])
    means = torch.as_tensor(pts, dtype=torch.float32)[None]
    g = DecodedGaussians(means, torch.zeros_like(means), torch.full((1, n, 3), 0.4), torch.full((1, n), 0.9),
                         torch.full((1, n, 3), 0.004), torch.tensor([1.0, 0, 0, 0]).expand(1, n, 4).clone())
    shape = np.zeros(300, np.float32)
    return Avatar(g, torch.as_tensor(faces), Animator(FlameModel(asset), torch.as_tensor(shape)), shape)


@pytest.mark.parametrize("n, degenerate", [(30, True), (3000, False)])
def test_turntable_says_degenerate_instead_of_blank_frames(demo_asset, tmp_path, n, degenerate):
    from pointillist_model.avatar import write_avatar

    cfg = AvatarConfig(size=96, turntable_frames=2, background=1.0)
    assert (cfg.degenerate(_avatar(demo_asset, n).gaussians.means[0].numpy(), demo_asset.v_template) is not None) \
        == degenerate
    files = write_avatar(_avatar(demo_asset, n), tmp_path, demo_asset, cfg)
    sheet = np.asarray(Image.open(files["turntable_png"]).convert("RGB")).astype(int)
    top = sheet[2:6, 2:-2]  # inside the sheet's 2 px border, above the framed head: white unless a banner
    black = (top.sum(-1) < 30).mean()
    if degenerate:
        assert black > 0.5, black
    else:
        assert black == 0 and (top.min(-1) > 200).mean() > 0.9


def test_ground_truth_clouds_of_every_hair_kind_pass(demo_asset):
    """The synthetic capture's true Gaussians (bald to long hair), placed on the template, lie
    inside the grown box: not one point outside, and far more than 1000 of them."""
    from pointillist_data.capture.appearance import identity_style, make_identity_gaussians
    from pointillist_data.flame.frames import face_frames

    frames = face_frames(torch.as_tensor(demo_asset.v_template, dtype=torch.float32), torch.as_tensor(demo_asset.faces))
    for i in range(5):  # the original appearance, then bald, long, short, medium
        g = make_identity_gaussians(demo_asset, i, None, identity_style(i, 0))
        means = g.to_global(frames)["means"].numpy()
        assert degenerate_cloud(means, demo_asset.v_template, 1000, 0.0, 0.05) is None
