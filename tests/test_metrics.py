"""The evaluation metrics against independent references (scikit-image, closed forms, known
image transformations) and their local-weight loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointillist_model.metrics import MetricWeightsError
from pointillist_model.metrics.fid import fid, fid_from_features, frechet_distance
from pointillist_model.metrics.image import psnr, ssim


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour images (B, 40, 52, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:40, 0:52] / 40.0
    out = []
    for _ in range(n):
        f = rng.uniform(1, 6, (3, 2))
        ph = rng.uniform(0, 6, 3)
        img = np.stack([0.5 + 0.4 * np.sin(f[c, 0] * x * 3 + f[c, 1] * y * 3 + ph[c]) for c in range(3)], -1)
        out.append((img * 255).astype(np.uint8))
    return np.stack(out)


# ------------------------------------------------------------------------------ PSNR / SSIM
def test_psnr_and_ssim_match_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = _images(3)
    rng = np.random.default_rng(1)
    b = np.clip(a.astype(int) + rng.integers(-25, 26, a.shape), 0, 255).astype(np.uint8)
    p, s = psnr(b, a).numpy(), ssim(b, a).numpy()
    for i in range(3):
        x, y = a[i] / 255.0, b[i] / 255.0
        assert p[i] == pytest.approx(peak_signal_noise_ratio(x, y, data_range=1.0), abs=1e-4)
        # Wang et al.'s SSIM: Gaussian window sigma 1.5 (11 taps), population covariance
        ref = structural_similarity(x, y, data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
        assert s[i] == pytest.approx(ref, abs=2e-4)
    assert ssim(a, a).numpy() == pytest.approx(1.0, abs=1e-6)


def test_lpips_metric_from_local_weights_and_without(tmp_path):
    from pointillist_model.lpips import LPIPS
    from pointillist_model.metrics.image import lpips
    from pointillist_model.metrics.suite import MetricSuite

    torch.manual_seed(0)
    net = LPIPS(widths=(4, 8, 8, 8, 8))
    a, b = _images(2), _images(2, seed=5)
    d = lpips(net, a, b)
    assert d.shape == (2,) and (d > 0).all()
    assert lpips(net, a, a).abs().max() < 1e-6
    with pytest.raises(MetricWeightsError, match="--lpips-weights"):
        MetricSuite(["lpips"], None, None, None, asset=None)


# ------------------------------------------------------------------------------ FID
def test_frechet_distance_matches_closed_forms():
    rng = np.random.default_rng(0)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]])) == \
        pytest.approx(9.0 + 1.0)
    # commuting covariances Q D1 Q^T and Q D2 Q^T: |dm|^2 + sum (sqrt d1 - sqrt d2)^2
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    d1, d2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    want = ((m1 - m2) ** 2).sum() + ((np.sqrt(d1) - np.sqrt(d2)) ** 2).sum()
    got = frechet_distance(m1, Q @ np.diag(d1) @ Q.T, m2, Q @ np.diag(d2) @ Q.T)
    assert got == pytest.approx(want, rel=1e-8)
    # from samples: N(0, I) against N(m, I) -> |m|^2 (up to sampling error)
    x = rng.normal(size=(20000, 4))
    m = np.array([1.0, -0.5, 0.0, 2.0])
    assert fid_from_features(x, rng.normal(size=(20000, 4)) + m) == pytest.approx((m ** 2).sum(), abs=0.05)
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)


class _TinyNet(torch.nn.Module):
    """A small randomly initialised feature extractor standing in for Inception."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 6, 3),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    def forward(self, x):
        return self.net(x)


def test_fid_of_image_sets_with_a_small_random_network():
    net = _TinyNet()
    a, b = _images(12), _images(12, seed=9)
    assert fid(net, a, a) == pytest.approx(0.0, abs=1e-6)
    dark = (a * 0.4).astype(np.uint8)
    assert fid(net, a, dark) > fid(net, a, b) > 0  # a darker copy of the set is further than another draw


def _he_init(net: torch.nn.Module) -> torch.nn.Module:
    """He-normal convolutions so that random features stay O(1) through the 94 layers."""
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net


def test_inception_loads_local_weights_of_both_layouts(tmp_path):
    from pointillist_model.metrics.inception import InceptionV3, load_inception

    with pytest.raises(MetricWeightsError, match="--inception-weights"):
        load_inception(None)
    with pytest.raises(MetricWeightsError, match="not found"):
        load_inception(tmp_path / "missing.pth")
    torch.manual_seed(0)
    ref = _he_init(InceptionV3(num_classes=1008, fid_variant=True))
    sd = ref.state_dict()
    sd["AuxLogits.fc.weight"] = torch.zeros(1008, 768)  # published files carry the auxiliary head
    torch.save(sd, tmp_path / "pt_inception.pth")
    net = load_inception(tmp_path / "pt_inception.pth")
    assert net.Mixed_5b.fid and net.Mixed_7c.pool == "max"  # 1008 classes: pytorch-fid's pooling
    x = torch.as_tensor(_images(2)).permute(0, 3, 1, 2) / 255.0
    with torch.no_grad():
        f = net(x)
        assert f.shape == (2, 2048) and f.abs().mean() > 1e-2
        torch.testing.assert_close(f, ref(x), rtol=1e-4, atol=1e-6)
        # the two pooling variants differ with the same weights (small networks)
        small = _he_init(InceptionV3(num_classes=10, fid_variant=True, width=1 / 8))
        other = InceptionV3(num_classes=10, fid_variant=False, width=1 / 8)
        other.load_state_dict(small.state_dict())
        a = small(x)
        assert (a - other(x)).abs().max() > 1e-3 * a.abs().max()
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, tmp_path / "bad.pth")
    with pytest.raises(MetricWeightsError, match="do not fit"):
        load_inception(tmp_path / "bad.pth")


# ------------------------------------------------------------------------------ CLIP
def test_clip_identity_score_from_a_local_random_encoder(tmp_path):
    transformers = pytest.importorskip("transformers")
    from pointillist_model.metrics.clip import CLIP_MEAN, CLIP_STD, clip_identity_score, load_clip

    with pytest.raises(MetricWeightsError, match="--clip-weights"):
        load_clip(None)
    with pytest.raises(MetricWeightsError, match="config.json"):
        load_clip(tmp_path)
    cfg = transformers.CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, image_size=32, patch_size=8, projection_dim=16)
    torch.manual_seed(0)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "clip")
    enc = load_clip(tmp_path / "clip")
    imgs = np.stack([np.asarray(_images(1, s)[0][:, 6:46]) for s in range(3)])  # square 40x40
    score = clip_identity_score(enc, imgs[0], imgs).numpy()
    # reference: the model called directly, CLIP's resize and normalisation done here
    model = transformers.CLIPVisionModelWithProjection.from_pretrained(tmp_path / "clip").eval()
    x = torch.as_tensor(imgs).permute(0, 3, 1, 2).float() / 255
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bicubic", antialias=True).clamp(0, 1)
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    with torch.no_grad():
        e = model(pixel_values=x).image_embeds
    e = e / e.norm(dim=-1, keepdim=True)
    np.testing.assert_allclose(score, (e @ e[0]).numpy(), atol=1e-5)
    assert score[0] == pytest.approx(1.0, abs=1e-6)
    # a full CLIP model folder (image tower + projection used)
    full = transformers.CLIPModel(transformers.CLIPConfig(
        vision_config=cfg.to_dict(), projection_dim=16, text_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
            bos_token_id=0, eos_token_id=1, pad_token_id=1)))
    full.save_pretrained(tmp_path / "clip_full")
    with torch.no_grad():
        e = full.visual_projection(full.vision_model(pixel_values=x).pooler_output)
    e = e / e.norm(dim=-1, keepdim=True)
    np.testing.assert_allclose(clip_identity_score(load_clip(tmp_path / "clip_full"), imgs[0], imgs).numpy(),
                               (e @ e[0]).numpy(), atol=1e-5)


# ------------------------------------------------------------------------------ AKD / APD
def _canonical(demo_asset):
    from pointillist_model.metrics.face import canonical_landmarks

    return canonical_landmarks(demo_asset)


def test_head_pose_recovers_known_rotations_from_landmarks(demo_asset):
    from scipy.spatial.transform import Rotation

    from pointillist_model.metrics.face import pose_distances, pose_from_landmarks

    idx, pts = _canonical(demo_asset)
    rng = np.random.default_rng(0)
    poses = []
    for ypr in ([0, 0, 0], [25, -10, 5], [-40, 15, -12]):
        R = Rotation.from_euler("YXZ", ypr, degrees=True).as_matrix()
        cam = 3000.0 * (pts @ R.T) + np.array([200.0, 300.0, 0.0])  # x right, y up, z to the camera, pixels
        lmk = np.zeros((478, 3))
        lmk[idx] = cam * np.array([1.0, -1.0, -1.0])  # MediaPipe axes: y down, z away
        lmk[idx, :2] += rng.normal(scale=1e-6, size=(len(idx), 2))
        pose = pose_from_landmarks(lmk, idx, pts)
        np.testing.assert_allclose(pose, ypr, atol=1e-4)
        poses.append(pose)
    assert pose_distances(poses[1], poses[2]) == pytest.approx((65 + 25 + 17) / 3, abs=1e-4)


@pytest.fixture(scope="module")
def face():
    pytest.importorskip("mediapipe", reason="AKD / APD need the landmarks extra")
    from skimage import data

    from pointillist_model.metrics.face import FaceMesh

    return FaceMesh(), np.ascontiguousarray(data.astronaut()[0:256, 100:356])


def test_akd_of_an_image_and_of_a_known_shift(face):
    from pointillist_model.metrics.face import akd

    mesh, img = face
    shift = 6
    moved = np.concatenate([np.repeat(img[:, :1], shift, 1), img[:, :-shift]], 1)  # content moves right
    value, per = akd(mesh, np.stack([img, img]), np.stack([img, moved]))
    assert per[0] == 0.0
    assert per[1] == pytest.approx(shift, abs=0.75)
    assert value == pytest.approx(per.mean())
    blank = np.full_like(img, 255)
    _, none = akd(mesh, img[None], blank[None])
    assert np.isnan(none[0])  # no face: left out of the mean, not counted as 0


def test_apd_of_an_in_plane_rotation(face, demo_asset):
    from scipy.spatial.transform import Rotation
    from skimage.transform import rotate

    from pointillist_model.metrics.face import head_poses, pose_distances

    mesh, img = face
    turned = (rotate(img, 12, mode="edge") * 255 + 0.5).astype(np.uint8)  # counter-clockwise on screen
    p = head_poses(mesh, np.stack([img, turned]), demo_asset)
    R = Rotation.from_euler("YXZ", p, degrees=True)
    rel = R[1] * R[0].inv()  # the change of head pose, in the camera's axes
    axis = rel.as_rotvec() / np.linalg.norm(rel.as_rotvec())
    assert np.degrees(rel.magnitude()) == pytest.approx(12, abs=1.5)
    assert abs(axis[2]) > 0.95  # about the viewing axis
    assert pose_distances(p[0], p[0]) == 0.0
