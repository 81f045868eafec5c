"""The synthetic cohort: files OpenSlide reads with the right MPP, class maps that match the
pixels, determinism, resumption, and between-slide differences that are stain differences."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pandas as pd
import pytest

from exaonepath_lab.io import sha256_file
from exaonepath_lab.slides.synthetic import (
    CLASS_NAMES,
    Acquisition,
    SlideSpec,
    make_cohort,
    read_classmap,
    render_class_patch,
    render_slide,
    rgb_to_od,
    sample_acquisition,
    spec_hash,
)

TINY = dict(size_um=(420.0, 560.0), coverage=(0.55, 0.65))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    df = make_cohort(out, n_slides=3, seed=7, workers=1, progress=False, **TINY)
    return out, df


def _spec(info: dict) -> SlideSpec:
    return SlideSpec.from_dict(info["spec"])


def test_cohort_files_table_and_json(cohort):
    out, df = cohort
    assert list(df.slide_id) == ["synth00", "synth01", "synth02"]
    assert set(df.status) == {"ok"}
    assert sorted(df.mpp.unique()) == [0.25, 0.5]
    on_disk = pd.read_csv(out / "cohort.csv")
    assert on_disk.slide_id.tolist() == df.slide_id.tolist()
    for sid in df.slide_id:
        for suffix in (".tiff", ".json", "_classmap.png", "_thumb.png"):
            assert (out / f"{sid}{suffix}").stat().st_size > 0
        info = json.loads((out / f"{sid}.json").read_text())
        assert info["class_names"] == list(CLASS_NAMES)
        acq = info["acquisition"]
        for k in ("h_vector", "e_vector", "h_scale", "e_scale", "white_point", "gamma", "blur_sigma_um",
                  "noise_sigma", "jpeg_quality"):
            assert k in acq
        assert np.linalg.norm(acq["h_vector"]) == pytest.approx(1.0, abs=1e-6)
        assert info["tiff_sha256"] == sha256_file(out / f"{sid}.tiff")
        assert spec_hash(_spec(info)) == info["spec_hash"]  # the JSON alone rebuilds the spec
    assert (out / "cohort_thumbs.png").exists()
    vecs = [tuple(json.loads((out / f"{s}.json").read_text())["acquisition"]["h_vector"]) for s in df.slide_id]
    assert len(set(vecs)) == 3, "each slide must have its own hematoxylin vector"


def test_openslide_reads_mpp_levels_and_pixels(cohort):
    import openslide

    from exaonepath_lab.slides.wsi import open_slide

    out, df = cohort
    for r in df.itertuples():
        info = json.loads((out / f"{r.slide_id}.json").read_text())
        with openslide.OpenSlide(str(out / f"{r.slide_id}.tiff")) as s:
            assert float(s.properties["openslide.mpp-x"]) == pytest.approx(r.mpp, rel=1e-6)
            assert float(s.properties["openslide.mpp-y"]) == pytest.approx(r.mpp, rel=1e-6)
            assert s.dimensions == (info["width"], info["height"])
            assert s.level_count >= 2
            assert s.level_downsamples[1] == pytest.approx(4.0, rel=0.01)
            lvl0 = np.asarray(s.read_region((0, 0), 0, s.dimensions))[..., :3]
        # The TIFF holds the rendered image (up to JPEG): same pixels, same orientation.
        rgb = render_slide(_spec(info)).rgb
        assert lvl0.shape == rgb.shape
        # JPEG drops much of the sensor noise, so compare at a scale above the noise grain.
        smooth = lambda x: cv2.blur(x.astype(np.float32), (5, 5))  # noqa: E731
        assert np.abs(smooth(lvl0) - smooth(rgb)).mean() < 1.5
        assert np.abs(smooth(lvl0[:, 2:]) - smooth(rgb[:, :-2])).mean() > 1.5  # a 2 px shift would show
        slide = open_slide(out / f"{r.slide_id}.tiff")
        assert slide.mpp == pytest.approx(r.mpp) and slide.mpp_source.startswith(("openslide", "tiff"))
        slide.close()


def test_classmap_shape_values_and_pixels(cohort):
    out, df = cohort
    for r in df.itertuples():
        info = json.loads((out / f"{r.slide_id}.json").read_text())
        cm, ds = read_classmap(out / f"{r.slide_id}.tiff")
        assert ds == info["classmap_downsample"] == round(8.0 / r.mpp)
        assert cm.dtype == np.uint8 and cm.shape == (math.ceil(info["height"] / ds), math.ceil(info["width"] / ds))
        assert set(np.unique(cm)) <= set(range(len(CLASS_NAMES)))
        assert cm[0, 0] == 0 and cm[-1, -1] == 0, "glass must surround the tissue"
        present = [c for c in range(1, 6) if (cm == c).mean() > 0.01]
        assert len(present) >= 3, f"{r.slide_id}: only classes {present}"
        fr = info["class_fractions"]
        assert sum(fr.values()) == pytest.approx(1.0)
        assert fr["tumor"] == pytest.approx((cm == 1).sum() / (cm > 0).sum())
        # Labels match the pixels: glass is bright, lymphocyte sheets are dark, fat is pale.
        import openslide

        with openslide.OpenSlide(str(r.path)) as s:
            img = np.asarray(s.read_region((0, 0), 0, s.dimensions))[..., :3]
        small = cv2.resize(img, (cm.shape[1], cm.shape[0]), interpolation=cv2.INTER_AREA)
        od = rgb_to_od(small).sum(-1)
        inner = cv2.erode((cm > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        glass = cv2.erode((cm == 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert od[glass].mean() < 0.35 < od[inner].mean()
        lym, fat = inner & (cm == 3), inner & (cm == 4)
        if lym.sum() > 10 and fat.sum() > 10:
            assert od[lym].mean() > 2 * od[fat].mean()


def test_same_seed_same_bytes_other_seed_differs_parallel(cohort, tmp_path):
    out, df = cohort
    again = make_cohort(tmp_path / "a", n_slides=2, seed=7, workers=2, progress=False, **TINY)
    assert set(again.status) == {"ok"}
    for sid in again.slide_id:
        assert sha256_file(tmp_path / "a" / f"{sid}.tiff") == sha256_file(out / f"{sid}.tiff")
        assert (tmp_path / "a" / f"{sid}_classmap.png").read_bytes() == (out / f"{sid}_classmap.png").read_bytes()
    other = make_cohort(tmp_path / "b", n_slides=1, seed=8, workers=1, progress=False, **TINY)
    assert sha256_file(other.path[0]) != sha256_file(out / "synth00.tiff")


def test_rerun_skips_done_and_repairs_damaged(tmp_path):
    out = tmp_path / "c"
    make_cohort(out, n_slides=2, seed=3, workers=1, progress=False, **TINY)
    before = sha256_file(out / "synth01.tiff")
    df = make_cohort(out, n_slides=2, seed=3, workers=1, progress=False, **TINY)
    assert df.status.tolist() == ["skipped_done", "skipped_done"]
    # A truncated TIFF (killed copy) no longer matches its recorded hash: it is redrawn.
    data = (out / "synth01.tiff").read_bytes()
    (out / "synth01.tiff").write_bytes(data[: len(data) // 2])
    (out / "synth00.json").unlink()  # a slide whose JSON never got written is unfinished
    df = make_cohort(out, n_slides=2, seed=3, workers=1, progress=False, **TINY)
    assert df.status.tolist() == ["ok", "ok"]
    assert sha256_file(out / "synth01.tiff") == before
    assert not list(out.glob(".*.part*")), "no temporary files left behind"


def test_failed_slide_is_reported_not_fatal(tmp_path):
    good = SlideSpec("good", seed=1, width_um=300, height_um=300)
    bad = SlideSpec("bad", seed=1, width_um=300, height_um=300, acquisition=Acquisition(jpeg_quality=90))
    (tmp_path / "bad.tiff").mkdir()  # a folder where the TIFF should go: writing fails
    df = make_cohort(tmp_path, specs=[good, bad], workers=1, progress=False)
    assert df.set_index("slide_id").status.to_dict() == {"good": "ok", "bad": "failed"}
    assert "bad.tiff" in df.set_index("slide_id").error["bad"]


def test_spec_errors_name_the_problem():
    with pytest.raises(ValueError, match="class_proportions"):
        SlideSpec("s", seed=0, class_proportions=(1.0, 0.0))
    with pytest.raises(ValueError, match="pen_mark"):
        SlideSpec("s", seed=0, pen_mark="purple")
    with pytest.raises(ValueError, match="unknown class"):
        render_class_patch("mucus")
    with pytest.raises(ValueError, match="slide ids must be unique"):
        make_cohort("/nonexistent-never-written", specs=[SlideSpec("a", 0), SlideSpec("a", 1)], progress=False)


def _hematoxylin_mask(rgb: np.ndarray, acq: Acquisition) -> np.ndarray:
    """uint8 mask of nuclear hematoxylin by colour deconvolution with the known stain vectors:
    an independent reading of the rendered morphology."""
    od = rgb_to_od(rgb, white=max(acq.white_point)).reshape(-1, 3)
    m = np.stack([acq.h_vector, acq.e_vector], 1)
    conc = np.linalg.lstsq(m, od.T, rcond=None)[0].T.reshape(*rgb.shape[:2], 2)
    return (conc[..., 0] > 0.45).astype(np.uint8)


def _survives(mask: np.ndarray, radius_um: float, mpp: float) -> float:
    """Granulometry: share of the nuclear mask left after an opening with a disk of ``radius_um``
    (nuclei narrower than the disk vanish)."""
    r = int(round(radius_um / mpp))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return float(cv2.morphologyEx(mask, cv2.MORPH_OPEN, k).sum() / max(int(mask.sum()), 1))


def test_classes_differ_by_morphology_and_scale_with_mpp():
    acq = Acquisition()
    masks = {c: _hematoxylin_mask(render_class_patch(c, size_px=384, seed=2), acq) for c in CLASS_NAMES[1:]}
    area = {c: float(m.mean()) for c, m in masks.items()}
    assert area["lymphocytes"] > 0.3 and area["tumor"] > 0.3  # nucleus-dense
    assert area["stroma"] < 0.2 and area["adipose"] < 0.02  # fibres / vacuoles
    surv = {c: _survives(m, 3.5, 0.5) for c, m in masks.items()}
    assert surv["tumor"] > 1.6 * surv["lymphocytes"]  # large pleomorphic vs small round nuclei
    assert max(surv["stroma"], surv["necrosis"]) < 0.25  # spindle nuclei, karyorrhectic debris
    # Morphology lives in µm: at 0.25 MPP the same nuclei are twice as wide in pixels, so the
    # same physical disk gives the same answer and the same pixel disk does not.
    fine = _hematoxylin_mask(render_class_patch("lymphocytes", size_px=768, mpp=0.25, seed=2), acq)
    assert abs(_survives(fine, 3.5, 0.25) - surv["lymphocytes"]) < 0.2
    assert _survives(fine, 3.5 / 2, 0.25) > surv["lymphocytes"] + 0.3


def test_slide_differences_are_stain_differences_macenko_removes():
    """The same tissue under three labs' acquisitions: far apart in colour; after Macenko
    (torchstain, the reference implementation) to one target, much closer."""
    import dataclasses

    import torch
    import torchstain

    rng = np.random.default_rng(11)
    tissue = SlideSpec("t", seed=5, width_um=200, height_um=200, tissue_coverage=1.0)
    imgs = [render_slide(dataclasses.replace(tissue, acquisition=sample_acquisition(rng))).rgb for _ in range(3)]
    norm = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    norm.fit(torch.from_numpy(render_slide(dataclasses.replace(tissue, seed=9)).rgb.transpose(2, 0, 1).copy()))

    def macenko(x: np.ndarray) -> np.ndarray:
        out, _, _ = norm.normalize(I=torch.from_numpy(x.transpose(2, 0, 1).copy()), stains=False)
        return out.numpy().astype(np.uint8)

    def spread(xs: list[np.ndarray]) -> float:
        m = [rgb_to_od(x).reshape(-1, 3).mean(0) for x in xs]
        return float(np.mean([np.linalg.norm(m[i] - m[j]) for i in range(len(m)) for j in range(i)]))

    raw, normed = spread(imgs), spread([macenko(x) for x in imgs])
    assert raw > 0.1, f"slides should differ visibly in colour (mean OD distance {raw:.3f})"
    assert normed < 0.5 * raw, f"Macenko should remove most of it: {raw:.3f} -> {normed:.3f}"
    same = sample_acquisition(np.random.default_rng(1), strength=0.0)
    assert same.h_vector == Acquisition().h_vector and same.h_scale == 1.0


def test_cli_synth(tmp_path, capsys):
    from exaonepath_lab.cli import main

    with pytest.raises(SystemExit):
        main(["synth", "--help"])
    assert "--stain-strength" in capsys.readouterr().out
    rc = main(["synth", "--out", str(tmp_path), "--slides", "1", "--seed", "4", "--size", "300", "360",
               "--workers", "1", "--mpp", "0.5"])
    assert rc == 0
    assert "ok: 1" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "cohort.csv").status.tolist() == ["ok"]


@pytest.mark.parametrize("mpp", [0.25, 0.5, 0.243])
def test_strip_upsampling_matches_remap(mpp):
    """The fast resize path (integer µm/px ratio) equals bilinear remap at pixel centres, edges included."""
    from exaonepath_lab.slides.synth_render import FINE_UM, _Upsampler

    rng = np.random.default_rng(0)
    field = rng.standard_normal((37, 41, 4)).astype(np.float32)
    W, H = int(41 * FINE_UM / mpp) - 1, int(37 * FINE_UM / mpp) - 1
    up = _Upsampler(mpp, W, 24)
    xs, ys = np.arange(W), np.arange(H)
    mapx = np.broadcast_to(((xs + 0.5) * mpp / FINE_UM - 0.5).astype(np.float32), (H, W)).copy()
    mapy = np.broadcast_to(((ys + 0.5) * mpp / FINE_UM - 0.5).astype(np.float32)[:, None], (H, W)).copy()
    ref = cv2.remap(field, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # Each call returns a view into a reused buffer: copy before the next call.
    got = np.concatenate([up(field, y0, min(H, y0 + up.strip_px)).copy() for y0 in range(0, H, up.strip_px)])
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-3)  # cv2 interpolates with fixed-point weights


def test_pen_mark_and_fold_are_drawn():
    """The optional artefacts exist in the pixels: green ink where no H&E pixel is green, and a
    fold that darkens tissue (a doubled section) without changing the class map."""
    import dataclasses

    base = SlideSpec("a", seed=4, width_um=360, height_um=360, tissue_coverage=0.7)
    plain = render_slide(base)
    pen = render_slide(dataclasses.replace(base, pen_mark="green"))
    fold = render_slide(dataclasses.replace(base, fold=True))

    def green(x: np.ndarray) -> float:
        x = x.astype(int)
        return float(((x[..., 1] > x[..., 0] + 25) & (x[..., 1] > x[..., 2] + 10)).mean())

    assert green(plain.rgb) < 0.001 < 0.02 < green(pen.rgb)
    assert np.array_equal(fold.classmap, plain.classmap) and np.array_equal(pen.classmap, plain.classmap)
    # Artefacts draw from their own random streams: the slide around them is pixel-identical.
    assert (pen.rgb == plain.rgb).all(-1).mean() > 0.5
    tissue = cv2.resize((plain.classmap > 0).astype(np.uint8), plain.rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
    darker = rgb_to_od(fold.rgb).sum(-1) - rgb_to_od(plain.rgb).sum(-1)
    assert np.median(np.abs(darker[tissue])) < 0.02  # unchanged away from the fold
    assert (darker[tissue] > 0.3).mean() > 0.02  # a band of doubled section
