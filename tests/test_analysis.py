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
    embed_panels,
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
def test_umap_runs_seeded() -> None:  # the UMAP calls of the suite (numba compiles ~30 s)
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import KNeighborsClassifier

    x, meta = _blobs(n_per=40)
    u = embed(x, "umap", seed=0, n_neighbors=10)
    assert u.coords.shape == (120, 2) and np.isfinite(u.coords).all() and u.params["n_neighbors"] == 10
    # seeded: the same seed gives the same map, another seed another one
    np.testing.assert_array_equal(embed(x, "umap", seed=0, n_neighbors=10).coords, u.coords)
    assert not np.allclose(embed(x, "umap", seed=1, n_neighbors=10).coords, u.coords)
    # three well-separated blobs stay separated in 2-D: every point's 2-D neighbours are from its blob
    blob = meta["slide_id"].to_numpy()
    knn = KNeighborsClassifier(n_neighbors=5).fit(u.coords, blob)
    assert (knn.predict(u.coords) == blob).all() and silhouette_score(u.coords, blob) > 0.5


def test_figure2_panels_hover_thumbnails_and_files(tmp_path: Path) -> None:
    x, meta = _blobs()
    rng = np.random.default_rng(1)
    panels = {"(a) raw": (x, meta), "(b) normalized": (x + rng.normal(size=x.shape) * 5, meta)}
    thumbs = [thumbnail_uri(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8))] * len(meta)
    from PIL import Image
    import base64
    import io

    assert Image.open(io.BytesIO(base64.b64decode(thumbs[0].split(",")[1]))).size == (112, 112)  # nuclei visible
    coords = embed_panels({t: f for t, (f, _) in panels.items()}, method="pca")
    metrics = pd.concat([collapse_metrics(f, m, name=t, n_boot=20) for t, (f, m) in panels.items()])
    fig = figure2(coords, meta, metrics=metrics, method="tsne", thumbnails=thumbs)
    assert fig.plotly.layout.title.text.startswith("t-SNE of features")  # spelled as such
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
    cls = figure2({"a": coords["(a) raw"]}, meta, method="pca", color_by="class_name")
    assert sorted(t.name for t in cls.plotly.data) == ["stroma", "tumor"]
    # 20 slides: every one in the legend, the figure tall enough that the legend needs no scrolling.
    many = meta.assign(slide_id=[f"slide-{i % 20:02d}" for i in range(len(meta))])
    tall = figure2({"a": coords["(a) raw"]}, many, method="pca")
    assert sum(t.showlegend for t in tall.plotly.data) == 20 and tall.plotly.layout.height >= 200 + 21 * 20


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
    kw = dict(out_dir=tmp_path, n_slides=3, per_slide=10, min_per_slide=6, k=5, method="pca", n_boot=20,
              resize=False, crop=False, progress=False)
    rep = collapse_report(small_real, panels, include_plotlyjs="directory", **kw)
    names = set(rep.metrics["features"])
    assert names == {"(a) raw/raw", "(b) raw/norm", "colour stats (raw)", "colour stats (macenko)",
                     "random-init vit_tiny_patch16_224 (raw)", "random-init vit_tiny_patch16_224 (macenko)"}
    for key in ("html", "png", "metrics", "differences", "sample", "embeddings", "json"):
        assert rep.paths[key].exists(), key
    assert rep.paths["json"].name == "collapse.json"
    assert len(rep.sample) == 30 and rep.sample["slide_id"].nunique() == 3
    csv = pd.read_csv(rep.paths["metrics"])
    assert {"metric", "value", "ci_low", "ci_high", "chance", "features", "note"} <= set(csv.columns)
    # Reference rows are computed on the very patches of the panels (same sample, same order).
    assert rep.features["random-init vit_tiny_patch16_224 (raw)"].meta[["slide_id", "x", "y"]].equals(
        rep.features["(a) raw/raw"].meta[["slide_id", "x", "y"]])
    diffs = pd.read_csv(rep.paths["differences"])
    pairs = set(zip(diffs["a"], diffs["b"]))
    assert ("(a) raw/raw", "(b) raw/norm") in pairs  # (a) − last panel
    assert ("(a) raw/raw", "random-init vit_tiny_patch16_224 (raw)") in pairs  # each panel vs its own-input twin
    assert ("(b) raw/norm", "random-init vit_tiny_patch16_224 (macenko)") in pairs
    emb = np.load(rep.paths["embeddings"])
    assert list(emb["titles"]) == list(panels) and emb["a_raw_raw"].shape == (30, 2)
    assert rep.paths["html"].read_text().count("data:image/jpeg;base64,") == 30  # one thumbnail per patch
    again = collapse_report(small_real, panels, baselines=(), thumbnails=False, include_plotlyjs=False, **kw)
    assert again.features["(a) raw/raw"].cache_status == "reused"
    pd.testing.assert_frame_equal(again.metrics, rep.metrics[rep.metrics["features"].isin(panels)].reset_index(drop=True))
    with pytest.raises(ValueError, match="unknown baseline"):
        collapse_report(small_real, panels, baselines=("color",), **kw)


def test_plan_sample_drops_small_slides_up_front_with_the_reason() -> None:
    from exaonepath_lab.analysis import plan_sample

    meta = pd.DataFrame({"slide_id": np.repeat(["big1", "big2", "big3", "tiny", "one"], [40, 30, 20, 5, 1])})
    plan = plan_sample(meta, n_slides=20, per_slide=100, k=15, seed=0)  # default min_per_slide = k + 1
    assert plan.min_per_slide == 16
    assert set(plan.used["slide_id"]) == {"big1", "big2", "big3"} and len(plan.indices) == 90
    assert dict(zip(plan.dropped["slide_id"], plan.dropped["reason"])) == {
        "one": "1 patch(es) < min_per_slide 16", "tiny": "5 patch(es) < min_per_slide 16"}
    text = plan.describe()
    assert "dropped tiny: 5 patch(es)" in text and "only 3 have" in text
    assert set(plan_sample(meta, min_per_slide=2, n_slides=None).used["slide_id"]) == {"big1", "big2", "big3", "tiny"}
    with pytest.raises(ValueError, match="lower --min-per-slide"):
        plan_sample(meta, min_per_slide=31)


def test_neighbour_gallery_and_reading() -> None:
    from exaonepath_lab.analysis import collapse_scores, gallery_html, neighbour_gallery, paired_differences
    from exaonepath_lab.analysis.summary import collapse_reading, metrics_table

    x, meta = _blobs(n_per=30, k=6)
    mixed = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    g = neighbour_gallery({"(a)": x, "(c)": mixed}, meta, n_queries=3, k=4)
    assert len(g) == 2 * 3 * 4 and not (g["query"] == g["neighbour"]).any()
    share = g.groupby("features")["same_slide"].mean()
    assert share["(a)"] == 1.0 and share["(c)"] < 0.8  # collapsed blobs: every neighbour from the query's slide
    page = gallery_html(g, [f"data:image/jpeg;base64,{i}" for i in range(len(meta))])
    assert page.count("<tr>") == 6 and "100% of neighbours" in page
    sc = {n: collapse_scores(f, meta, name=n, k=5) for n, f in (("(a)", x), ("(b)", x * 0.5 + mixed), ("(c)", mixed))}
    from exaonepath_lab.analysis import metrics_from_scores

    metrics = pd.concat([metrics_from_scores(s, n_boot=30) for s in sc.values()])
    diffs = pd.concat([paired_differences(sc[a], sc["(c)"], n_boot=30) for a in ("(a)", "(b)")])
    lines = collapse_reading(metrics, diffs, panels=("(a)", "(b)", "(c)"))
    assert lines[0][1] == "good" and "paired difference" in lines[0][0]
    # the same comparison on 3 of those slides is a hint, not a finding: no "good" verdict is left
    few = meta["slide_id"].isin(["s0", "s1", "s2"]).to_numpy()
    sc3 = {n: collapse_scores(f[few], meta[few].reset_index(drop=True), name=n, k=5)
           for n, f in (("(a)", x), ("(b)", x * 0.5 + mixed), ("(c)", mixed))}
    m3 = pd.concat([metrics_from_scores(s, n_boot=30) for s in sc3.values()])
    d3 = pd.concat([paired_differences(sc3[a], sc3["(c)"], n_boot=30) for a in ("(a)", "(b)")])
    hedged = collapse_reading(m3, d3, panels=("(a)", "(b)", "(c)"))
    assert "good" not in {kind for _, kind in hedged}
    assert "Only 3 slides" in hedged[0][0] and hedged[0][1] == "note"
    tab = metrics_table(metrics)
    assert list(tab["features"]) == ["(a)", "(b)", "(c)", "chance level"]
    assert "k-NN slide purity ↓" in tab.columns and "iLISI ↑" in tab.columns
    assert tab.filter(like="SO share").iloc[:3].map(lambda v: v[0].isdigit()).all().all()  # labels span slides


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


def test_reading_splits_only_a_clear_reduction() -> None:
    """The (b)-share sentence ("already gives N% of the reduction") is only said when (a) − (c) is clear;
    on an unclear reduction (paired CI includes 0) a percentage split of it would read noise as a finding."""
    from exaonepath_lab.analysis.summary import collapse_reading

    def frames(ac_low: float) -> tuple[pd.DataFrame, pd.DataFrame]:
        m = pd.DataFrame({"features": ["(a)", "(b)", "(c)"], "metric": "knn_slide_purity",
                          "value": [0.82, 0.79, 0.77], "ci_low": [0.81, 0.74, 0.72], "ci_high": [0.83, 0.84, 0.82]})
        d = pd.DataFrame({"a": ["(a)", "(b)"], "b": ["(c)", "(c)"], "metric": "knn_slide_purity",
                          "difference": [0.05, 0.02], "ci_low": [ac_low, -0.01], "ci_high": [0.10, 0.05]})
        return m, d

    unclear = " ".join(t for t, _ in collapse_reading(*frames(-0.01), panels=("(a)", "(b)", "(c)")))
    assert "not clear at this sample size" in unclear and "of the reduction" not in unclear
    clear = " ".join(t for t, _ in collapse_reading(*frames(0.01), panels=("(a)", "(b)", "(c)")))
    assert "already gives 60% of the reduction" in clear


def test_figure2_long_panel_titles_wrap_to_panel_width() -> None:
    """Four panels named like audit's ('timm:vit_tiny_patch16_224 (tiny1), raw input'): every line of every
    panel title fits a quarter page, so neighbouring titles do not overlap (seen in a real report)."""
    from exaonepath_lab.analysis.figure2 import TITLE_WIDTH

    x, meta = _blobs(n_per=10)
    titles = [f"timm:vit_tiny_patch16_224 (tiny{i}), {inp} input" for i in (1, 2) for inp in ("raw", "Macenko")]
    fig = figure2({t: x[:, :2] for t in titles}, meta, method="pca")
    shown = [a.text for a in fig.plotly.layout.annotations if a.text.replace("<br>", " ").replace(", ", ",")
             .replace(" ", "") in {t.replace(", ", ",").replace(" ", "") for t in titles}]
    assert len(shown) == 4
    assert all(len(line) <= TITLE_WIDTH for s in shown for line in s.split("<br>"))
    assert shown[0] == "timm:vit_tiny_patch16_224<br>(tiny1),<br>raw input"
    assert fig.plotly.layout.margin.t >= 130  # room for three title lines under the figure's own title
