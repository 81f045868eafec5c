"""Sampling, embeddings, Figure 2, the one-call collapse report and the explorer."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from exaonepath_lab.analysis import (
    collapse_metrics,
    collapse_report,
    embed,
    figure2,
    sample_patches,
    thumbnail_uri,
)
from exaonepath_lab.features.patch_grid import GridPatchDataset

torch.set_num_threads(2)


def _blobs(n_per: int = 60, k: int = 3, d: int = 64, seed: int = 0) -> tuple[np.ndarray, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(k), n_per)
    x = rng.normal(size=(k * n_per, d)) + 5 * rng.normal(size=(k, d))[lab]
    meta = pd.DataFrame({"slide_id": [f"s{i}" for i in lab], "x": np.arange(k * n_per) * 64, "y": 0,
                         "label": lab % 2, "class_name": np.where(lab % 2, "tumor", "stroma")})
    return x.astype(np.float32), meta


def test_sample_patches_is_seeded_and_carries_meta() -> None:
    meta = pd.DataFrame({"slide_id": np.repeat([f"s{i}" for i in range(12)], [5] + [30] * 11),
                         "x": np.arange(335), "y": 0, "label": 1})
    idx = sample_patches(meta, n_slides=10, per_slide=20, seed=0)
    assert np.array_equal(idx, sample_patches(meta, n_slides=10, per_slide=20, seed=0))
    assert not np.array_equal(idx, sample_patches(meta, n_slides=10, per_slide=20, seed=1))
    sub = meta.iloc[idx]
    counts = sub.groupby("slide_id").size()
    assert len(counts) == 10 and set(counts) <= {5, 20} and len(set(idx)) == len(idx)
    assert {"x", "y", "label"} <= set(sub.columns)
    assert sample_patches(meta, slides=["s0"], per_slide=None).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="not in meta"):
        sample_patches(meta, slides=["nope"])


def test_embeddings_are_seeded_and_separate_blobs() -> None:
    x, meta = _blobs()
    a = embed(x, "tsne", seed=0, perplexity=20, n_jobs=1)
    b = embed(x, "tsne", seed=0, perplexity=20, n_jobs=1)
    assert a.coords.shape == (180, 2) and np.allclose(a.coords, b.coords)
    assert a.params["method"] == "tsne" and a.params["initialization"] == "pca"
    p = embed(x, "pca").coords
    t = collapse_metrics(p, meta, k=5, n_boot=0, probe=False).set_index("metric")
    assert t.loc["knn_slide_purity", "value"] > 0.9  # blobs stay apart in 2-D
    assert embed(x[:10], "tsne", perplexity=30, n_jobs=1).params["perplexity"] == pytest.approx(3.0)  # clipped for tiny N
    with pytest.raises(ValueError, match="unknown method"):
        embed(x, "mds")
    with pytest.raises(ValueError, match="NaN"):
        embed(np.full((5, 3), np.nan), "pca")


@pytest.mark.slow
def test_umap_runs_seeded() -> None:  # the one UMAP call of the suite (numba compiles ~30 s)
    x, _ = _blobs(n_per=40)
    u = embed(x, "umap", seed=0, n_neighbors=10)
    assert u.coords.shape == (120, 2) and np.isfinite(u.coords).all() and u.params["n_neighbors"] == 10


def test_figure2_panels_hover_thumbnails_and_files(tmp_path: Path) -> None:
    x, meta = _blobs()
    rng = np.random.default_rng(1)
    panels = {"(a) raw": (x, meta), "(b) normalized": (x + rng.normal(size=x.shape) * 5, meta)}
    thumbs = [thumbnail_uri(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8), 32)] * len(meta)
    fig = figure2(panels, method="pca", n_boot=20, thumbnails=thumbs)
    assert len(fig.plotly.data) == 6  # 3 slides × 2 panels, one legend entry per slide
    assert sum(t.showlegend for t in fig.plotly.data) == 3
    k = int(fig.plotly.data[0].customdata[0][-1])  # index into the shared thumbnail array
    assert fig.thumbnails[k].startswith("data:image/jpeg;base64,") and len(fig.thumbnails) == len(meta)
    assert set(fig.metrics["features"]) == set(panels)
    assert "k-NN purity" in fig.plotly.layout.xaxis.title.text
    paths = fig.save(tmp_path, include_plotlyjs="directory")
    html = paths["html"].read_text()
    assert "plotly_hover" in html and (tmp_path / "plotly.min.js").exists()
    assert html.count("data:image/jpeg;base64,") == len(meta)  # stored once, shared by both panels
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cls = figure2({"a": (x, meta)}, method="pca", color_by="class_name", compute_metrics=False)
    assert sorted(t.name for t in cls.plotly.data) == ["stroma", "tumor"]


@pytest.fixture(scope="module")
def small_real(sample_he: dict[str, Path]) -> GridPatchDataset:
    """Real H&E (fetched sample data): 3 sources as 3 'slides', 12 tissue patches of 64 px each."""
    src = {n: [sample_he[f]] for n, f in [("tiatoolbox", "tiatoolbox-target.png"), ("stardist", "stardist-histo.jpg"),
                                          ("cmu1", "cmu-small-region.svs")]}
    return GridPatchDataset(src, patch_px=64, max_per_slide=12, seed=0)


def test_collapse_report_one_call_writes_everything_and_reuses_features(tmp_path: Path, small_real) -> None:
    from exaonepath_lab.encoders import create_encoder
    from exaonepath_lab.stain import MacenkoNormalizer

    enc = create_encoder("random:vit_tiny_patch16_224", seed=5, img_size=64, patch_size=16, depth=2)
    mac = MacenkoNormalizer(backend="torch")
    panels = {"(a) raw/raw": (enc, None), "(b) raw/norm": (enc, mac)}
    rep = collapse_report(small_real, panels, out_dir=tmp_path, n_slides=3, per_slide=10, method="pca", n_boot=20,
                          resize=False, crop=False, progress=False, include_plotlyjs="directory")
    names = set(rep.metrics["features"])
    assert names == {"(a) raw/raw", "(b) raw/norm", "colour stats (raw)", "colour stats (macenko)",
                     "random-init vit_tiny_patch16_224 (raw)", "random-init vit_tiny_patch16_224 (macenko)"}
    for key in ("html", "png", "metrics", "sample", "embeddings", "json"):
        assert rep.paths[key].exists(), key
    assert len(rep.sample) == 30 and rep.sample["slide_id"].nunique() == 3
    csv = pd.read_csv(rep.paths["metrics"])
    assert {"metric", "value", "ci_low", "ci_high", "chance", "features"} <= set(csv.columns)
    assert rep.paths["html"].read_text().count("data:image/jpeg;base64,") == 30  # one thumbnail per patch
    again = collapse_report(small_real, panels, out_dir=tmp_path, n_slides=3, per_slide=10, method="pca", n_boot=20,
                            resize=False, crop=False, progress=False, references=False, thumbnails=False,
                            include_plotlyjs=False)
    assert again.features["(a) raw/raw"].cache_status == "reused"
    pd.testing.assert_frame_equal(again.metrics, rep.metrics[rep.metrics["features"].isin(panels)].reset_index(drop=True))


def test_explorer_switches_views() -> None:
    from exaonepath_lab.analysis.explorer import CollapseExplorer

    x, meta = _blobs(n_per=30)
    sets = {("enc", "raw"): (x, meta), ("enc", "macenko"): (x[::-1].copy(), meta), ("other", "raw"): (x * 2, meta)}
    ex = CollapseExplorer(sets, n_boot=5, include_plotlyjs=False, method="pca", n_jobs=1)
    assert "plotly_hover" in ex.html and ex.figure is not None
    assert ex.key == ("enc", "macenko")  # options are sorted
    first = ex.embedding().copy()
    ex.normalization.value = "raw"
    assert not np.allclose(ex.embedding(), first)
    ex.colour.value = "class_name"
    assert sorted(t.name for t in ex.figure.data) == ["stroma", "tumor"]
    ex.encoder.value = "other"
    ex.normalization.value = "macenko"  # not computed for 'other'
    assert ex.figure is None and ex.html == "" and "no features" in ex.caption.value
    ex.normalization.value = "raw"
    assert "k-NN purity" in ex.caption.value
    ex.method.value = "tsne"
    ex.perplexity.value = 10
    assert ex.embedding().shape == (90, 2) and len(ex._emb) == 5  # 3 PCA, t-SNE at perplexity 30 and 10
