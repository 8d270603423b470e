"""The dataset card of a token store: ``DATASET.md`` and ``DATASET.png`` (quality histograms)
in the store, generated from the manifest's per-sample entries (:mod:`pointillist_data.provenance`)
and regenerated on every append.

Both files are listed in ``manifest.json`` under ``documents`` (``{name: {"sha256",
"bytes"}}``, ``samples``: the committed samples they describe) and so covered by its
checksum. :func:`refresh_documents` writes them after a batch is committed, crash-safely:
the manifest first accepts the new sha256 beside the old one (``documents_previous``), then
each file is replaced atomically, then the manifest drops the old sha256. The card is a pure
function of the committed entries and attributes (no clock), so writing it again gives the
same bytes.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from ..pictures import FEW_SAMPLES
from ..provenance import QUALITY_FIELDS, quality_of
from .card_sections import array_dictionary_lines, code_text, flame_text, how_to_load_lines, vocabulary_lines
from .query import FILTER_FIELDS

__all__ = ["CARD", "CARD_PNG", "card_documents", "card_markdown", "quality_png", "refresh_documents",
           "document_problems", "NERSEMBLE_TERMS", "SYNTHETIC_TERMS", "MONOCULAR_TERMS", "CITATION"]

CARD, CARD_PNG = "DATASET.md", "DATASET.png"
DOC_NAMES = (CARD, CARD_PNG)
_HIST_FIELDS = ("psnr", "ssim", "landmark_px", "landmark_iod_pct", "vertex_mm", "points")

NERSEMBLE_TERMS = (
    "The captures are NeRSemble (Kirschstein et al., ACM TOG 2023), distributed by the Technical University of "
    "Munich under the NeRSemble Terms of Use: access is granted on request "
    "(https://tobias-kirschstein.github.io/nersemble/), for non-commercial research only; no redistribution of "
    "the captures, and images of participants may be shown only as the terms allow. Samples derived from them "
    "(this store's tokens, point clouds and portrait crops) are subject to the same terms.")
SYNTHETIC_TERMS = (
    "Synthetic captures rendered by pointillist (`pointillist demo-capture`) from the bundled demo head: no "
    "third-party capture terms apply; the FLAME terms below do.")
MONOCULAR_TERMS = (
    "Monocular videos supplied by whoever ran `pointillist run --videos`: the terms of those videos apply (the "
    "consent of the people shown and the videos' licences); pointillist records no licence for them, so ask the "
    "store's maker before sharing or showing these samples.")
FLAME_TERMS = {
    "bundled": "FLAME 2023 Open (Max Planck Institute for Intelligent Systems, https://flame.is.tue.mpg.de), "
               "CC-BY-4.0: credit Li et al. 2017 and keep the licence notice. The bundled demo head adds procedural "
               "rigging and teeth; it serves demos and tests, no substitute for FLAME in research.",
    "file": "The FLAME model file named above, under the licence it was obtained with (FLAME 2020 / 2023: the "
            "MPI FLAME licence, non-commercial scientific research; FLAME 2023 Open: CC-BY-4.0) - "
            "https://flame.is.tue.mpg.de/modellicense.html.",
}
CITATION = """@inproceedings{liu2026avatarpointillist,
  title     = {AvatarPointillist: Autoregressive 4D Gaussian Avatarization},
  author    = {Hongyu Liu and Xuan Wang and Yating Wang and Zijian Wu and Ziyu Wan and Yue Ma and Runtao Liu and
               Boyao Zhou and Yujun Shen and Qifeng Chen},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  year      = {2026}
}
@article{kirschstein2023nersemble,
  title   = {NeRSemble: Multi-view Radiance Field Reconstruction of Human Heads},
  author  = {Tobias Kirschstein and Shenhan Qian and Simon Giebenhain and Tim Walter and Matthias Nie{\\ss}ner},
  journal = {ACM Transactions on Graphics},
  year    = {2023}
}
@article{li2017flame,
  title   = {Learning a model of facial shape and expression from {4D} scans},
  author  = {Tianye Li and Timo Bolkart and Michael J. Black and Hao Li and Javier Romero},
  journal = {ACM Transactions on Graphics (Proc. SIGGRAPH Asia)},
  year    = {2017}
}
@inproceedings{qian2024gaussianavatars,
  title     = {GaussianAvatars: Photorealistic Head Avatars with Rigged {3D} Gaussians},
  author    = {Shenhan Qian and Tobias Kirschstein and Liam Schoneveld and Davide Davoli and Simon Giebenhain and
               Matthias Nie{\\ss}ner},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition},
  year      = {2024}
}"""


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _distinct(entries: list[dict], get) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in entries:
        k = get(e.get("provenance") or {})
        k = json.dumps(k, sort_keys=True) if isinstance(k, (dict, list)) else str(k)
        out[k] = out.get(k, 0) + 1
    return out


def _layout_lines(fmt: str) -> list[str]:
    """How sample i's rows are found (``## Token layout``), for the store's format version."""
    packed = tuple(int(x) for x in fmt.split(".")[:2] if x.isdigit()) >= (1, 2)
    L = ["## Token layout", "",
         "- `tokens[offsets[i]:offsets[i + 1]]` is sample i's sequence `S S S S x y z b ... E E E E` "
         "(4 tokens per point + 8), and `points`, `binding`, `rgb`, `opacity`, `scale`, `rotation` "
         "`[point_offsets[i]:point_offsets[i + 1]]` are its points, in token order."]
    if packed:
        L.append("- The rows are packed: no PAD is stored between or after samples, so `tokens[:offsets[-1]]` "
                 "is every sequence, one after the other.")
    else:
        L.append(f"- Format {fmt}: each append batch was padded to a shard boundary, so the last sample of a "
                 "batch is followed by PAD (token 11170 with the default vocabulary); its sequence is "
                 "`tokens[offsets[i]:offsets[i] + 4 * point_count[i] + 8]` (true of every sample in every format).")
    L += ["- `offsets` is written last by every append: its valid (>= 0), non-decreasing leading entries are "
          "the committed samples; rows beyond `offsets[-1]` are never read.", ""]
    return L


def card_markdown(attrs: dict[str, Any], entries: list[dict[str, Any]], max_rows: int = 500) -> str:
    """The text of ``DATASET.md`` for the committed manifest ``entries`` and group ``attrs``."""
    rows = [quality_of(e) for e in entries]
    n = len(entries)
    pts = sum(int(e.get("points", 0)) for e in entries)
    toks = sum(int(e.get("tokens", 0)) for e in entries)
    splits: dict[str, list[str]] = {}
    for r in rows:
        splits.setdefault(str(r["split"]), []).append(str(r["subject_id"]))
    L = ["# Dataset card", "",
         "Generated by pointillist from this store's `manifest.json` on every append; do not edit it by hand "
         "(`pointillist inspect STORE` prints the same per-sample figures, `--where` filters them).", "",
         "## Contents", "",
         f"- samples: {n} {'identity' if n == 1 else 'identities'} (one tokenized canonical Gaussian point cloud each, with its FLAME shape and "
         "a frontal portrait crop)",
         f"- points: {pts}; tokens: {toks} (4 per point + 8 frame tokens per sample)",
         f"- vocabulary: {attrs.get('vocabulary')}; token order: {attrs.get('token_order', '')}",
         f"- quantisation box (m): {attrs.get('quant_box')}",
         f"- store format {attrs.get('format_version')} ({attrs.get('store_type', 'pointillist.tokens')})", "",
         # how to load, the arrays and the vocabulary: pointillist_data/store/card_sections.py
         *how_to_load_lines(attrs, {k: len(v) for k, v in splits.items()}),
         *array_dictionary_lines(attrs),
         *vocabulary_lines(attrs),
         *_layout_lines(str(attrs.get("format_version", ""))),
         "## Split", ""]
    for name in sorted(splits):
        ids = splits[name]
        L.append(f"- {name}: {len(ids)}" + (f" ({', '.join(ids[:40])}{', ...' if len(ids) > 40 else ''})"
                                             if name != "train" else ""))
    if not splits:
        L.append("- (empty)")
    L += ["", "`pointillist train-ar` and `train-decoder` train on `train` only (`--split all` uses every sample and "
          "says so); each checkpoint records the identities it trained on, and `pointillist evaluate` refuses to "
          "score those unless `--allow-seen` (its report names the identities scored and whether any was seen).",
          "", "Filter fields (`pointillist inspect --where`, `where=` of the datasets and `--where` of the trainers; "
          "one language): " + ", ".join(f"`{k}`" for k in FILTER_FIELDS) + "."]
    created = sorted(str((e.get("provenance") or {}).get("created")) for e in entries
                     if (e.get("provenance") or {}).get("created"))
    L += ["", "## How it was made", "",
          "Per participant: 2D landmarks -> FLAME tracking -> GaussianAvatars-style fitting (Gaussians bound to "
          "FLAME faces) -> canonical global point cloud (zero expression and pose) -> tokens (1024 bins, yzx "
          "order, binding token); then appended here. Each sample's full record (sequences, timesteps, stage "
          "config hashes, FLAME model, code version, figures) is its `provenance` in `manifest.json`.", ""]
    L.append("- created: " + (f"{created[0]} to {created[-1]}" if created else "unknown"))
    for title, get in (("FLAME model", lambda p: flame_text(p.get("flame"))), ("code", lambda p: code_text(p.get("code"))),
                       ("sequences", lambda p: ", ".join(map(str, p.get("sequences") or [])) or "not recorded")):
        for k, c in sorted(_distinct(entries, get).items()):
            L.append(f"- {title}: {k} ({c} sample{'s' if c != 1 else ''})")
    for stage in ("landmarks", "track", "fit", "canonicalize", "tokenize"):
        d = _distinct(entries, lambda p, s=stage: ((p.get("stages") or {}).get(s) or {}).get("config_hash"))
        L.append(f"- {stage} config hash: " + ", ".join(f"`{k}` ({c})" for k, c in sorted(d.items())))
    L += ["", "## Quality", "", f"![quality histograms]({CARD_PNG})", "",
          "| figure | unit | known | min | median | max | meaning |", "|---|---|---|---|---|---|---|"]
    for f, (unit, desc) in QUALITY_FIELDS.items():
        v = np.asarray([r[f] for r in rows if r[f] is not None], np.float64)
        L.append(f"| {f} | {unit} | {len(v)}/{n} | " + (" | ".join(_fmt(float(x)) for x in
                 (v.min(), np.median(v), v.max())) if len(v) else "- | - | -") + f" | {desc} |")
    L += ["", "### Per sample", "", "| # | subject | split | " + " | ".join(QUALITY_FIELDS) + " |",
          "|---" * (3 + len(QUALITY_FIELDS)) + "|"]
    for i, r in enumerate(rows[:max_rows]):
        L.append(f"| {i} | {r['subject_id']} | {r['split']} | " + " | ".join(_fmt(r[f]) for f in QUALITY_FIELDS) + " |")
    if n > max_rows:
        L.append(f"\n({n - max_rows} more: `pointillist inspect STORE`)")
    kinds = sorted({str(((e.get("provenance") or {}).get("flame") or {}).get("kind", "file")) for e in entries})
    # conservative: a sample whose capture is neither synthetic nor monocular is under NeRSemble's terms
    kind = [(e.get("provenance") or {}).get("capture") for e in entries]
    synthetic, monocular = kind.count("synthetic"), kind.count("monocular")
    L += ["", "## Licences you must respect", ""]
    if synthetic:
        L.append(f"- **Synthetic captures** ({synthetic} sample(s)): {SYNTHETIC_TERMS}")
    if monocular:
        L.append(f"- **Monocular videos** ({monocular} sample(s), capture `monocular`): {MONOCULAR_TERMS}")
    if synthetic + monocular < len(entries) or not entries:
        L.append("- **NeRSemble**" + (f" ({len(entries) - synthetic - monocular} sample(s))"
                                      if synthetic + monocular else "") + f": {NERSEMBLE_TERMS}")
    L += [f"- **FLAME** ({k}): {FLAME_TERMS.get(k, FLAME_TERMS['file'])}" for k in kinds or ["bundled"]]
    L += ["- **pointillist** (the code that made this store): see the repository's licence.", "",
          "## How to cite", "", "If you train or evaluate on this data, cite the method, the captures and the head "
          "model:", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(L)


# below FEW_SAMPLES samples a histogram says less than the numbers: DATASET.png prints them


def value_range(values: np.ndarray) -> tuple[float, float]:
    """``(lo, hi)`` a histogram of ``values`` spans: their minimum and maximum; when every
    value is equal a hair-wide range at the value (not ``value +/- 0.5``, which drew an SSIM
    axis up to 1.46)."""
    lo, hi = float(np.min(values)), float(np.max(values))
    return (lo, hi) if hi > lo else (lo, lo + max(abs(lo) * 1e-6, 1e-12))


def _panel(title: str, values: np.ndarray, size=(300, 190), labels: list[str] | None = None) -> np.ndarray:
    from PIL import Image, ImageDraw

    W, H = size
    img = Image.new("RGB", size, (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((6, 4), f"{title} (n={len(values)})", fill=(0, 0, 0))
    x0, y0, x1, y1 = 30, 22, W - 8, H - 22
    d.line([(x0, y1), (x1, y1)], fill=(0, 0, 0))
    d.line([(x0, y0), (x0, y1)], fill=(0, 0, 0))
    if len(values) == 0:
        d.text((x0 + 10, (y0 + y1) // 2), "not recorded", fill=(120, 120, 120))
        return np.asarray(img)
    if len(values) < FEW_SAMPLES:  # the values themselves, one line per sample
        for k, v in enumerate(values):
            name = labels[k] if labels else f"#{k}"
            d.text((x0 + 10, y0 + 8 + 22 * k), f"{name}: {float(v):.4g}", fill=(0, 0, 0))
        return np.asarray(img)
    lo, hi = value_range(values)
    counts, edges = np.histogram(values, bins=min(20, max(5, len(values))), range=(lo, hi))
    bw = (x1 - x0) / len(counts)
    top = max(1, int(counts.max()))
    for k, c in enumerate(counts):
        h = (y1 - y0) * c / top
        d.rectangle([x0 + k * bw + 1, y1 - h, x0 + (k + 1) * bw - 1, y1], fill=(70, 110, 200))
    d.text((2, y0), str(top), fill=(0, 0, 0))
    d.text((x0, y1 + 4), f"{lo:.4g}", fill=(0, 0, 0))
    hi_s = f"{hi:.4g}"
    d.text((x1 - 6 * len(hi_s), y1 + 4), hi_s, fill=(0, 0, 0))
    return np.asarray(img)


def quality_png(entries: list[dict[str, Any]]) -> bytes:
    """``DATASET.png``: histograms (counts of samples) of the quality figures in
    :data:`_HIST_FIELDS`, one panel each, with the unit in the title; a figure known for fewer
    than :data:`FEW_SAMPLES` samples is printed as its values (``subject: value``) instead.
    Deterministic bytes."""
    from PIL import Image

    rows = [quality_of(e) for e in entries]
    panels = []
    for f in _HIST_FIELDS:
        unit = QUALITY_FIELDS[f][0]
        v = np.asarray([r[f] for r in rows if r[f] is not None], np.float64)
        names = [str(r["subject_id"]) for r in rows if r[f] is not None]
        panels.append(_panel(f"{f}" + (f" ({unit})" if unit else ""), v, labels=names))
    grid = np.concatenate([np.concatenate(panels[i:i + 3], 1) for i in range(0, len(panels), 3)], 0)
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    return buf.getvalue()


def card_documents(attrs: dict[str, Any], entries: list[dict[str, Any]]) -> dict[str, bytes]:
    """``{"DATASET.md": bytes, "DATASET.png": bytes}`` for the committed entries."""
    return {CARD: card_markdown(attrs, entries).encode(), CARD_PNG: quality_png(entries)}


def refresh_documents(writer) -> None:
    """Regenerate the card of a :class:`~pointillist_data.store.write.TokenStoreWriter`'s
    committed state and write it crash-safely (see the module docstring); nothing is written
    when the stored card already describes it."""
    from .base import MANIFEST, Manifest, read_raw, sha256_bytes

    m: Manifest = writer.manifest
    entries = list(m.extra.get("samples", []))[: writer.num_samples]
    docs = card_documents(dict(writer.group.attrs), entries)
    want = {k: {"sha256": sha256_bytes(v), "bytes": len(v)} for k, v in docs.items()}
    have = m.extra.get("documents") or {}
    on_disk = {k: read_raw(writer.staged._store, k) for k in docs}
    if all(have.get(k) == w and on_disk[k] is not None and sha256_bytes(on_disk[k]) == w["sha256"]
           for k, w in want.items()) and not m.extra.get("documents_previous"):
        return
    st = writer.staged
    prev = {k: None if v is None else sha256_bytes(v) for k, v in on_disk.items()}  # None: absent is valid
    m.extra["documents"] = want
    m.extra["documents_previous"] = prev
    st.put_sync(MANIFEST, m.to_bytes())  # either version of each file is valid from here
    st.barrier()
    for k, v in docs.items():
        st.put_sync(k, v)
    st.barrier()
    m.extra.pop("documents_previous")
    st.put_sync(MANIFEST, m.to_bytes())
    st.barrier()
    st.written.clear()


def document_problems(reader) -> list:
    """:class:`~pointillist_data.store.base.Problem` s of the card files against the manifest
    (missing, or sha256 neither the listed nor an accepted previous one)."""
    from .base import MANIFEST, Problem, read_raw, sha256_bytes

    out = []
    m = reader.manifest
    docs = m.extra.get("documents") or {}
    prev = m.extra.get("documents_previous") or {}
    for name, entry in sorted(docs.items()):
        data = read_raw(reader.zstore, name)
        if data is None:
            if name not in prev or prev[name] is not None:
                out.append(Problem("card", name, "missing"))
        elif sha256_bytes(data) not in (entry.get("sha256"), prev.get(name)):
            out.append(Problem("card", name, f"corrupted (sha256 differs from {MANIFEST})"))
    return out
