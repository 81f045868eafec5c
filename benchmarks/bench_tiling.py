"""Tiling speed on a 40,000 x 40,000 px slide at 0.25 µm/px; prints ONE JSON line.

Measures (median of ``--repeats`` runs):
- ``coords_s``: full ``tile_slide`` (thumbnail, mask, grid, HDF5 + QC PNG) for one slide;
  ``segment_grid_s``: the same without writing files. Target (issue 2): < 2 s/slide
  (CLAM reports 1-2 s).
- ``thumb_s`` vs ``openslide_thumb_s``: our strip-wise thumbnail against OpenSlide's own
  ``get_thumbnail`` at the same size (the established library; ratio > 1 means we are slower).
- patches/s read at level 0 (512 px) by the patch reader with 1 and 2 worker processes,
  against a plain single-process ``openslide.read_region`` loop (ratio = ours / plain).
  The patch reader is ``exaonepath_lab.slides.dataset.PatchListDataset`` (the reader behind
  ``TiledPatchDataset``) through a torch DataLoader when that module exists, else a minimal OpenSlide reader (one handle per worker).

The slide is generated once into a cache folder (tiled JPEG pyramid, levels 1/4/16/64,
tissue = three discs; pre-encoded tiles, so generation takes seconds).
Usage: ``.venv/bin/python benchmarks/bench_tiling.py [--cache DIR] [--patches 300]``.
CPU only; nothing here uses a GPU.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

SIDE = 40_000
MPP = 0.25
TILE = 256
DISCS = ((0.30, 0.35, 0.20), (0.65, 0.60, 0.25), (0.50, 0.85, 0.08))  # (cx, cy, r) in slide fractions


def _in_tissue(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x, y in slide fractions → bool, inside one of the discs."""
    return np.any([(x - cx) ** 2 + (y - cy) ** 2 < r**2 for cx, cy, r in DISCS], axis=0)


def make_slide(path: Path) -> float:
    """Write the benchmark slide; returns seconds spent."""
    import imagecodecs
    import tifffile

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    glass = np.clip(240 + rng.normal(0, 2, (TILE, TILE, 3)), 0, 255).astype(np.uint8)
    variants = []
    for _ in range(4):
        t = np.clip(np.array([205, 125, 180]) + rng.normal(0, 14, (TILE, TILE, 1)), 0, 255).astype(np.uint8)
        nuclei = rng.random((TILE, TILE)) < 0.02
        t[nuclei] = (90, 40, 130)
        variants.append(imagecodecs.jpeg8_encode(t, level=85))
    glass_jpg = imagecodecs.jpeg8_encode(glass, level=85)
    tmp = path.with_suffix(".part.tiff")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        for i, ds in enumerate((1, 4, 16, 64)):
            side = -(-SIDE // ds)
            n = -(-side // TILE)
            res = dict(resolution=(1e4 / (MPP * ds),) * 2, resolutionunit="CENTIMETER")
            kw = dict(shape=(side, side, 3), dtype=np.uint8, tile=(TILE, TILE), photometric="rgb",
                      compression="jpeg", metadata=None, subfiletype=0 if i == 0 else 1, **res)
            if ds <= 4:  # many tiles: pre-encoded, tissue decided at the tile centre
                def tiles(n=n, side=side):
                    for r in range(n):
                        for c in range(n):
                            inside = _in_tissue(np.array((c + 0.5) * TILE / side), np.array((r + 0.5) * TILE / side))
                            yield variants[(r * 7 + c) % 4] if inside else glass_jpg
                tw.write(tiles(), **kw)
            else:  # coarse levels: exact per-pixel discs (this is what segmentation sees)
                yy, xx = np.mgrid[0:side, 0:side]
                m = _in_tissue((xx + 0.5) / side, (yy + 0.5) / side)
                img = np.where(m[..., None], np.array([205, 125, 180], np.uint8), glass[0, 0]).astype(np.uint8)
                kw.pop("shape"), kw.pop("dtype")
                tw.write(img, **kw)
    os.replace(tmp, path)
    return time.perf_counter() - t0


def _median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# --- minimal patch reader (fallback when slides.dataset has not landed) -------------
_SLIDE = None


def _init(path: str) -> None:
    global _SLIDE
    from exaonepath_lab.slides.wsi import open_slide

    _SLIDE = open_slide(path)


def _read(args: tuple[np.ndarray, int]) -> int:
    coords, ps = args
    total = 0
    for x, y in coords:
        total += int(_SLIDE.read_region((int(x), int(y)), 0, (ps, ps))[0, 0, 0])
    return total


def _reader_rate(path: str, coords: np.ndarray, ps: int, workers: int) -> float:
    """patches/s of the patch reader with ``workers`` processes (pool started before timing)."""
    try:
        from exaonepath_lab.slides.dataset import PatchListDataset  # noqa: F401
        return _dataset_rate(path, coords, ps, workers)
    except ImportError:
        pass
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(path,)) as ex:
        list(ex.map(_read, [(coords[:2], ps)] * workers))  # warm up: imports + slide open
        chunks = np.array_split(coords, workers * 8)
        t0 = time.perf_counter()
        list(ex.map(_read, [(c, ps) for c in chunks]))
        return len(coords) / (time.perf_counter() - t0)


def _dataset_rate(path: str, coords: np.ndarray, ps: int, workers: int) -> float:
    """patches/s of the kit's slide patch dataset through a torch DataLoader."""
    import pandas as pd
    import torch

    from exaonepath_lab.slides.dataset import PatchListDataset

    torch.set_num_threads(1)
    meta = pd.DataFrame({"slide_path": path, "x": coords[:, 0], "y": coords[:, 1], "patch_size": ps, "mpp": MPP})
    ds = PatchListDataset(meta)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, persistent_workers=True,
                                     prefetch_factor=4)
    it = iter(dl)
    next(it)  # workers started, slide opened in the first one
    t0 = time.perf_counter()
    n = sum(1 for _ in it)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", default=os.environ.get("EXAONEPATH_BENCH_CACHE",
                                                      str(Path.home() / ".cache" / "exaonepath-lab" / "bench")),
                    help="folder for the generated slide (kept between runs)")
    ap.add_argument("--patches", type=int, default=300, help="level-0 patches read per reader measurement")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats of the segmentation (median)")
    args = ap.parse_args()

    import openslide

    from exaonepath_lab.slides.wsi import open_slide
    from exaonepath_lab.tiling import TileConfig, patch_size_px, read_at_mpp, tile_slide, tissue_mask, tissue_patches

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    slide_path = cache / f"bench_{SIDE}px_{MPP}mpp.tiff"
    gen_s = make_slide(slide_path) if not slide_path.exists() else 0.0
    cfg = TileConfig()

    def segment_grid():
        with open_slide(slide_path) as s:
            thumb, scale = read_at_mpp(s, cfg.seg_mpp)
            mask = tissue_mask(thumb, mpp=s.mpp / scale[0], config=cfg)
            return tissue_patches(mask, scale=scale, level0_size=s.dimensions, patch_size=patch_size_px(s.mpp),
                                  min_tissue=cfg.min_tissue)

    coords, _ = segment_grid()  # warm-up (page cache, imports)
    seg_s = _median_time(segment_grid, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        coords_s = _median_time(lambda: tile_slide(slide_path, tmp, cfg), args.repeats)

    with open_slide(slide_path) as s:
        thumb, _ = read_at_mpp(s, cfg.seg_mpp)
        thumb_s = _median_time(lambda: read_at_mpp(s, cfg.seg_mpp), args.repeats)
    size = (thumb.shape[1], thumb.shape[0])
    with openslide.OpenSlide(str(slide_path)) as o:
        os_thumb_s = _median_time(lambda: o.get_thumbnail(size), args.repeats)

    ps = patch_size_px(MPP)
    rng = np.random.default_rng(0)
    sample = coords[rng.choice(len(coords), size=min(args.patches, len(coords)), replace=False)]
    with openslide.OpenSlide(str(slide_path)) as o:
        o.read_region(tuple(int(v) for v in sample[0]), 0, (ps, ps))
        t0 = time.perf_counter()
        for x, y in sample:
            np.asarray(o.read_region((int(x), int(y)), 0, (ps, ps)).convert("RGB"))
        plain = len(sample) / (time.perf_counter() - t0)
    r1 = _reader_rate(str(slide_path), sample, ps, 1)
    r2 = _reader_rate(str(slide_path), sample, ps, 2)
    try:
        import exaonepath_lab.slides.dataset  # noqa: F401
        reader = "slides.dataset.PatchListDataset + torch DataLoader"
    except ImportError:
        reader = "minimal OpenSlide reader (slides.dataset not available)"

    print(json.dumps({
        "bench": "tiling", "slide_px": SIDE, "slide_mpp": MPP, "patch_px": ps, "n_patches": int(len(coords)),
        "generate_s": round(gen_s, 2), "segment_grid_s": round(seg_s, 3), "coords_s": round(coords_s, 3),
        "thumb_s": round(thumb_s, 3), "openslide_thumb_s": round(os_thumb_s, 3),
        "thumb_ratio_vs_openslide": round(thumb_s / os_thumb_s, 3),
        "read_plain_openslide_patches_per_s": round(plain, 1), "read_1w_patches_per_s": round(r1, 1),
        "read_2w_patches_per_s": round(r2, 1), "read_1w_ratio_vs_openslide": round(r1 / plain, 3),
        "read_2w_ratio_vs_openslide": round(r2 / plain, 3), "reader": reader, "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
