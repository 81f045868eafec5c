"""The kit's one collapse pipeline: sample -> features -> references -> metrics -> differences -> Figure 2 -> files.

Two entry points share every step and write the same files:

* :func:`collapse_report` — from a patch dataset and encoders (extracts and caches features);
  used by the demo, ``exaonepath-lab audit`` and notebook 03.
* :func:`collapse_from_features` — from feature files written by ``exaonepath-lab extract``
  (``exaonepath-lab collapse``); reference rows are computed on the same patches, read again
  from their sources.

Output contract (``out_dir``): ``sample.csv`` (the sampled patches, ``dataset_index``),
``metrics.csv`` (tidy, :data:`~.collapse.COLUMNS`), ``differences.csv`` (paired bootstrap,
:data:`~.collapse.DIFF_COLUMNS`), ``embeddings.npz`` (one (N, 2) array per panel, keyed by
:func:`slug` of its title, plus ``titles``), ``figure2.html`` (hover shows the patch),
``figure2.png``, ``collapse.json`` (settings, sample plan with dropped slides and why, panels'
provenance, files) and ``features/<slug>.h5`` caches (a rerun reuses them).
"""
from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ..io import atomic_path, write_json_atomic
from .collapse import CollapseScores, collapse_scores, metrics_from_scores, paired_differences
from .colour_features import colour_features_dataset
from .figure2 import Figure2, embed_panels, figure2, thumbnail_uri
from .sampling import sample_patches

BASELINES = ("colour", "random")


def slug(s: str) -> str:
    """File-name form of a panel title (feature caches, ``embeddings.npz`` keys)."""
    return re.sub(r"[^A-Za-z0-9]+", "_", s).strip("_").lower() or "panel"


class SubsetDataset:
    """Rows ``indices`` of an item dataset, with its ``meta`` re-indexed 0..n-1."""

    def __init__(self, dataset: Any, indices: np.ndarray) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.meta = dataset.meta.iloc[self.indices].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = dict(self.dataset[int(self.indices[i])])
        item["index"] = int(i)
        return item


class PatchTableDataset:
    """Patches named by a table, read again from their sources (item protocol).

    Rows with ``slide_path`` (tiled slides) are read through OpenSlide at ``out_px``; rows with
    ``path`` are image files, cropped to ``x, y, patch_size`` when those columns are set.
    """

    def __init__(self, meta: pd.DataFrame, *, out_px: int | None = None,
                 mpp_overrides: Mapping[str, float] | None = None) -> None:
        self.meta = meta.reset_index(drop=True)
        self.out_px = out_px
        self.mpp_overrides = dict(mpp_overrides) if mpp_overrides else None
        self._slides = None
        if "slide_path" in self.meta.columns:
            from ..slides.dataset import PatchListDataset

            self._slides = PatchListDataset(self.meta, out_px=out_px, mpp_overrides=self.mpp_overrides)
        elif "path" not in self.meta.columns:
            raise ValueError(f"cannot read the patches again: the table has neither 'slide_path' nor 'path' "
                             f"(columns {list(self.meta.columns)})")
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._slides is not None:
            return {"image": self._slides[i]["image"], "index": int(i)}
        from ..datasets import read_rgb

        r = self.meta.iloc[i]
        img = self._cache.get(r["path"])
        if img is None:
            img = self._cache.setdefault(r["path"], read_rgb(r["path"]))
            if len(self._cache) > 64:
                self._cache.pop(next(iter(self._cache)))
        if {"x", "y", "patch_size"} <= set(self.meta.columns) and pd.notna(r["patch_size"]):
            x, y, s = int(r["x"]), int(r["y"]), int(r["patch_size"])
            img = img[y:y + s, x:x + s]
        return {"image": np.ascontiguousarray(img), "index": int(i)}


@dataclasses.dataclass
class SamplePlan:
    """Which slides and patches are used, and which slides were dropped and why (decided before any compute)."""

    indices: np.ndarray
    used: pd.DataFrame  # slide_id, n_available, n_sampled
    dropped: pd.DataFrame  # slide_id, n_available, reason
    min_per_slide: int
    notes: list[str]

    def describe(self) -> str:
        lines = [f"sample: {len(self.indices)} patches of {len(self.used)} slides "
                 f"({int(self.used['n_sampled'].min())}-{int(self.used['n_sampled'].max())} per slide)"]
        for r in self.dropped.itertuples():
            lines.append(f"  dropped {r.slide_id}: {r.reason}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"n_patches": int(len(self.indices)), "min_per_slide": self.min_per_slide,
                "used": self.used.to_dict("records"), "dropped": self.dropped.to_dict("records"), "notes": self.notes}


def default_min_per_slide(k: int) -> int:
    """k + 1: a slide can then fill a patch's whole k-NN neighbourhood (and has ≥ 2 patches for the probe's CV)."""
    return int(k) + 1


def plan_sample(
    meta: pd.DataFrame,
    *,
    n_slides: int | None = 10,
    per_slide: int | None = 1000,
    min_per_slide: int | None = None,
    k: int = 15,
    seed: int = 0,
    slide_col: str = "slide_id",
) -> SamplePlan:
    """Check the input against the metrics and draw the sample, before any feature is computed.

    Slides with fewer than ``min_per_slide`` patches (default :func:`default_min_per_slide`) are
    dropped with the reason; fewer than 2 usable slides is an error naming the fix.
    """
    if slide_col not in meta.columns:
        raise ValueError(f"the patch table has no {slide_col!r} column (columns: {list(meta.columns)})")
    mps = default_min_per_slide(k) if min_per_slide is None else int(min_per_slide)
    if mps < 2:
        raise ValueError(f"min_per_slide={mps}: the slide probe needs ≥ 2 patches per slide; use ≥ 2")
    counts = meta[slide_col].astype(str).value_counts().sort_index()
    small = counts[counts < mps]
    dropped = pd.DataFrame({"slide_id": small.index.astype(str), "n_available": small.to_numpy(),
                            "reason": [f"{n} patch(es) < min_per_slide {mps}" for n in small]},
                           columns=["slide_id", "n_available", "reason"])
    n_ok = int((counts >= mps).sum())
    if n_ok < 2:
        raise ValueError(
            f"only {n_ok} slide(s) have ≥ {mps} patches ({len(counts)} slides: "
            f"{', '.join(f'{s}={n}' for s, n in counts.items())}); every collapse metric compares ≥ 2 slides. "
            f"Fix: lower --min-per-slide (≥ 2; with k={k} neighbours a slide below {k + 1} patches cannot fill a "
            "neighbourhood), lower --k, or add slides.")
    notes = []
    if n_slides is not None and n_ok < n_slides:
        notes.append(f"asked for {n_slides} slides; only {n_ok} have ≥ {mps} patches, all of them are used")
    if min(n_ok, n_slides or n_ok) < 5:
        notes.append(f"{min(n_ok, n_slides or n_ok)} slides: the 95% intervals resample slides, and with fewer than 5 "
                     "they are crude (few distinct resamples); read them as rough")
    idx = sample_patches(meta, n_slides=n_slides, per_slide=per_slide, seed=seed, slide_col=slide_col,
                         min_per_slide=mps)
    sampled = meta.iloc[idx][slide_col].astype(str).value_counts().sort_index()
    used = pd.DataFrame({"slide_id": sampled.index.astype(str), "n_available": counts[sampled.index].to_numpy(),
                         "n_sampled": sampled.to_numpy()})
    return SamplePlan(idx, used, dropped, mps, notes)


@dataclasses.dataclass
class CollapseReport:
    """What the pipeline produced: tidy metrics, paired differences, the figure, files, feature sets."""

    metrics: pd.DataFrame
    differences: pd.DataFrame
    figure: Figure2
    paths: dict[str, Path]
    features: dict[str, Any]  # name -> FeatureSet (panels, random twins) or (N, D) array (colour stats)
    sample: pd.DataFrame
    plan: SamplePlan
    scores: dict[str, CollapseScores]
    panels: list[str]
    settings: dict[str, Any]


def _say(msg: str, progress: bool) -> None:
    if progress:
        print(f"[collapse] {msg}", file=sys.stderr, flush=True)


def _norm_label(normalizer: Any) -> str:
    return "raw" if normalizer is None else type(normalizer).__name__.replace("Normalizer", "").lower() or "normalized"


def _check_color_by(meta: pd.DataFrame, color_by: str) -> None:
    if color_by not in meta.columns:
        raise ValueError(f"color_by={color_by!r} is not a column of the patch table ({list(meta.columns)})")


def _check_baselines(baselines: Sequence[str]) -> tuple[str, ...]:
    bad = sorted(set(baselines) - set(BASELINES))
    if bad:
        raise ValueError(f"unknown baseline(s) {bad}; choose from {list(BASELINES)} (e.g. 'colour,random')")
    return tuple(baselines)


def default_pairs(panels: Sequence[str], names: Sequence[str], inputs: Mapping[str, str]) -> list[tuple[str, str]]:
    """Differences reported by default: every panel minus the last (the paper's (a)−(c), (b)−(c)), and each
    panel minus the random-init twin that sees the same input (``inputs``: panel -> "raw"/"macenko"; did
    training add slide clustering beyond what the input carries?)."""
    pairs = [(p, panels[-1]) for p in panels[:-1]]
    for p in panels:
        twin = twin_of(names, inputs.get(p, ""))
        if twin is not None and twin != p:
            pairs.append((p, twin))
    return pairs


def twin_of(names: Sequence[str], input_label: str) -> str | None:
    """The random-init reference row seeing ``input_label`` ("raw" / "macenko") input, if any."""
    return next((n for n in names if n.startswith("random-init") and n.endswith(f"({input_label})")), None)


def collapse_report(
    dataset: Any,
    panels: Mapping[str, tuple[Any, Any]],
    *,
    out_dir: str | Path,
    n_slides: int | None = 10,
    per_slide: int | None = 1000,
    min_per_slide: int | None = None,
    seed: int = 0,
    method: str = "tsne",
    perplexity: float = 30.0,
    lisi_perplexity: float = 30.0,
    k: int = 15,
    n_boot: int = 200,
    baselines: Sequence[str] = BASELINES,
    pairs: Sequence[tuple[str, str]] | None = None,
    batch_size: int = 64,
    resize: bool = True,
    crop: bool = True,
    thumbnails: bool = True,
    color_by: str = "slide_id",
    progress: bool = True,
    include_plotlyjs: bool | str = True,
    n_jobs: int = 2,
) -> CollapseReport:
    """Figure 2 and its numbers from a patch dataset and encoders, in one call (see the module docstring).

    Args:
        dataset: item dataset (uint8 patches + ``meta`` with ``slide_id``; ``label`` enables the SO share).
        panels: title -> (encoder or encoder name, stain normalizer or None); the last panel is the
            reference of the default differences (the paper's (c)).
        out_dir: where files go; features are cached in ``out_dir/features/<slug>.h5``, so a rerun
            (e.g. with another embedding) does not extract again.
        min_per_slide: slides with fewer patches are dropped up front, with the reason (default k + 1).
        perplexity: the t-SNE's; ``lisi_perplexity``: iLISI's own fixed neighbourhood.
        baselines: reference rows on the same patches: ``"colour"`` (colour statistics of each distinct
            input) and ``"random"`` (random-init twin of each distinct (architecture, input)).
        pairs: (a, b) feature-set names whose paired differences a − b are reported (default
            :func:`default_pairs`).
    """
    from ..encoders import create_encoder, random_like
    from ..features import extract_features

    baselines = _check_baselines(baselines)
    out = Path(out_dir)
    plan = plan_sample(dataset.meta, n_slides=n_slides, per_slide=per_slide, min_per_slide=min_per_slide, k=k,
                       seed=seed)
    _check_color_by(dataset.meta, color_by)
    _say(plan.describe(), progress)
    getattr(dataset, "check_readable", lambda _: None)(plan.indices)  # a non-image: named now, not mid-extraction
    out.mkdir(parents=True, exist_ok=True)
    sub = SubsetDataset(dataset, plan.indices)
    feats: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    twins: list[tuple[Any, Any, str]] = []
    for i, (title, (enc, normalizer)) in enumerate(panels.items(), start=1):
        enc = create_encoder(enc) if isinstance(enc, str) else enc
        _say(f"panel {i}/{len(panels)}: {title}", progress)
        feats[title] = extract_features(enc, sub, normalizer=normalizer, batch_size=batch_size, resize=resize,
                                        crop=crop, cache_path=out / "features" / f"{slug(title)}.h5", progress=progress)
        inputs[title] = normalizer
        if "random" in baselines and getattr(enc, "checkpoint_sha256", None) != f"random-seed-{seed}":
            twins.append((enc, normalizer, _norm_label(normalizer)))  # (a random-init panel is its own twin)
    refs: dict[str, Any] = {}
    seen: set[str] = set()
    for enc, normalizer, label in twins:
        name = f"random-init {enc.spec.timm_name} ({label})"
        if name in seen or name in feats:
            continue
        seen.add(name)
        _say(f"reference: {name}", progress)
        refs[name] = extract_features(random_like(enc, seed=seed), sub, normalizer=normalizer, batch_size=batch_size,
                                      resize=resize, crop=crop, cache_path=out / "features" / f"{slug(name)}.h5",
                                      progress=progress)
    settings = {"n_slides": n_slides, "per_slide": per_slide, "min_per_slide": plan.min_per_slide, "seed": seed,
                "method": method, "perplexity": perplexity, "lisi_perplexity": lisi_perplexity, "k": k,
                "n_boot": n_boot, "baselines": list(baselines), "resize": resize, "crop": crop, "color_by": color_by}
    return _analyse(sub, feats, inputs, refs, out=out, input_labels={t: _norm_label(n) for t, n in inputs.items()},
                    plan=plan, settings=settings, pairs=pairs, thumbnails=thumbnails, progress=progress,
                    include_plotlyjs=include_plotlyjs, n_jobs=n_jobs, batch_size=batch_size)


def _colour_refs(sub: Any, inputs: Mapping[str, Any], batch_size: int, progress: bool) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for normalizer in inputs.values():
        name = f"colour stats ({_norm_label(normalizer)})"
        if name not in out:
            _say(f"reference: {name}", progress)
            out[name] = colour_features_dataset(sub, normalizer=normalizer, batch_size=batch_size)[0]
    return out


def _analyse(sub: Any, feats: dict[str, Any], inputs: Mapping[str, Any], refs: dict[str, Any], *, out: Path,
             input_labels: Mapping[str, str],
             plan: SamplePlan, settings: dict[str, Any], pairs: Sequence[tuple[str, str]] | None, thumbnails: bool,
             progress: bool, include_plotlyjs: bool | str, n_jobs: int, batch_size: int) -> CollapseReport:
    """The shared second half: references' colour rows, scores, metrics, differences, figure, files."""
    meta = sub.meta
    panels = list(feats)
    if "colour" in settings["baselines"]:
        refs = {**_colour_refs(sub, inputs, batch_size, progress), **refs}
    every = {**feats, **refs}
    k, seed, n_boot = settings["k"], settings["seed"], settings["n_boot"]
    scores: dict[str, CollapseScores] = {}
    for name, f in every.items():
        _say(f"metrics: {name}", progress)
        x = f.features if hasattr(f, "features") else np.asarray(f)
        scores[name] = collapse_scores(x, meta, name=name, k=k, lisi_perplexity=settings["lisi_perplexity"], seed=seed)
    metrics = pd.concat([metrics_from_scores(s, n_boot=n_boot, seed=seed) for s in scores.values()], ignore_index=True)
    pairs = default_pairs(panels, list(every), input_labels) if pairs is None else list(pairs)
    missing = sorted({n for p in pairs for n in p} - set(scores))
    if missing:
        raise ValueError(f"pairs name unknown feature sets {missing}; known: {list(scores)}")
    diffs = [paired_differences(scores[a], scores[b], n_boot=n_boot, seed=seed) for a, b in pairs]
    differences = (pd.concat(diffs, ignore_index=True) if diffs
                   else pd.DataFrame(columns=["a", "b", "metric", "difference", "ci_low", "ci_high"]))
    with atomic_path(out / "sample.csv") as tmp:
        meta.assign(dataset_index=getattr(sub, "indices", np.arange(len(meta)))).to_csv(tmp, index=False)
    with atomic_path(out / "metrics.csv") as tmp:
        metrics.to_csv(tmp, index=False)
    with atomic_path(out / "differences.csv") as tmp:
        differences.to_csv(tmp, index=False)
    _say(f"embedding {len(panels)} panel(s) ({settings['method']})", progress)
    coords = embed_panels({t: feats[t].features for t in panels}, method=settings["method"],
                          perplexity=settings["perplexity"], seed=seed, n_jobs=n_jobs)
    thumbs = None
    if thumbnails:
        _say(f"hover thumbnails for {len(sub)} patches", progress)
        try:
            thumbs = [thumbnail_uri(sub[i]["image"]) for i in range(len(sub))]
        except (OSError, ValueError, KeyError) as e:  # sources moved since extraction: the figure still works
            print(f"[collapse] no hover thumbnails: the patches could not be read again ({e})", file=sys.stderr)
    fig = figure2(coords, meta, metrics=metrics, method=settings["method"], perplexity=settings["perplexity"],
                  seed=seed, thumbnails=thumbs, color_by=settings["color_by"])
    paths = fig.save(out, include_plotlyjs=include_plotlyjs)
    with atomic_path(out / "embeddings.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, titles=np.array(panels), **{slug(t): c for t, c in coords.items()})
    paths.update(metrics=out / "metrics.csv", differences=out / "differences.csv", sample=out / "sample.csv",
                 embeddings=out / "embeddings.npz")
    paths["json"] = out / "collapse.json"
    prov = {t: {"encoder": f.key.get("encoder"), "normalizer": f.key.get("normalizer"),
                "norm_status": f.status_counts(), "cache": f.cache_status}
            for t, f in every.items() if hasattr(f, "key")}
    write_json_atomic(paths["json"], {
        "format": "exaonepath-lab/collapse-v2", "panels": panels, "references": list(refs), "settings": settings,
        "sample": plan.to_dict(), "feature_sets": prov, "pairs": [list(p) for p in pairs],
        "files": {k_: str(v) for k_, v in paths.items()},
    })
    return CollapseReport(metrics, differences, fig, paths, every, meta, plan, scores, panels, settings)


# ----------------------------------------------------------------------------- from feature files
def _identity_keys(meta: pd.DataFrame) -> pd.Series:
    cols = [c for c in ("slide_id", "slide_path", "path", "x", "y", "patch_size") if c in meta.columns]
    return meta[cols].astype(str).agg("|".join, axis=1)


def _file_config(path: Path) -> dict[str, Any]:
    cfg = Path(f"{path}.config.json")
    return json.loads(cfg.read_text()) if cfg.exists() else {}


def _read_settings(key: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """How the cached patches were read (``out_px``, ``mpp_overrides``): from the key's dataset identity
    (innermost dataset), else from the extraction's config.json."""
    d = key.get("dataset") or {}
    while isinstance(d.get("of"), dict):
        d = d["of"]
    return {"out_px": d.get("out_px", config.get("out_px")), "mpp_overrides": d.get("mpp_overrides")}


def normalizer_from_key(key: Mapping[str, Any], *, backend: str = "auto") -> Any:
    """Rebuild the stain normalizer a feature cache was made with (None when it had none)."""
    ident = key.get("normalizer")
    if ident is None:
        return None
    if ident.get("class") != "MacenkoNormalizer" or "config" not in ident:
        raise ValueError(f"cannot rebuild stain normalizer {ident.get('class')!r} from the feature file's key; "
                         "drop the baselines for this file (--baselines none)")
    from ..stain import MacenkoNormalizer
    from ..stain.target import StainTarget

    c = ident["config"]
    return MacenkoNormalizer(StainTarget.from_dict(c["target"]), Io=c["Io"], alpha=c["alpha"], beta=c["beta"],
                             policy=c["policy"], min_tissue_fraction=c["min_tissue_fraction"],
                             min_tissue_pixels=c["min_tissue_pixels"], min_stain_angle_deg=c["min_stain_angle_deg"],
                             pixel_stride=c["pixel_stride"], backend=backend)


def random_twin_from_key(key: Mapping[str, Any], *, seed: int = 0) -> Any:
    """The seeded random-init twin of the encoder a feature cache was made with (same architecture and
    preprocessing), built from the architecture recorded in the cache key — so the twin of a ``kit-dino``
    checkpoint needs no checkpoint file. Same weights as ``encoders.random_like`` of that encoder."""
    from ..encoders import create_encoder

    e = key["encoder"]
    arch = e["arch"]
    pre = {"mean": tuple(e["mean"]), "std": tuple(e["std"]), "input_size": e["input_size"],
           "resize_size": e["resize_size"]}
    try:
        return create_encoder(f"random:{arch['timm_name']}", seed=seed, **arch["timm_kwargs"], **pre)
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise ValueError(f"cannot rebuild {arch['timm_name']} with {arch['timm_kwargs']} from the feature file's key "
                         f"({err}); run `exaonepath-lab audit` with the encoder itself, or drop 'random' from "
                         "--baselines") from err


def collapse_from_features(
    feature_files: Mapping[str, str | Path],
    *,
    out_dir: str | Path,
    n_slides: int | None = 10,
    per_slide: int | None = 1000,
    min_per_slide: int | None = None,
    seed: int = 0,
    method: str = "tsne",
    perplexity: float = 30.0,
    lisi_perplexity: float = 30.0,
    k: int = 15,
    n_boot: int = 200,
    baselines: Sequence[str] = (),
    pairs: Sequence[tuple[str, str]] | None = None,
    thumbnails: bool = True,
    color_by: str = "slide_id",
    progress: bool = True,
    include_plotlyjs: bool | str = True,
    n_jobs: int = 2,
    batch_size: int = 64,
) -> CollapseReport:
    """The same pipeline from feature files (title -> FEATURES.h5) of the same patches.

    The sample is drawn once (from the first file's patch table) and looked up in every file, so
    all panels and reference rows see the same patches. Reference rows need the patches again:
    they are read from ``slide_path``/``path`` in the table, at the extraction's ``out_px``.
    """
    from ..features import load_features

    baselines = _check_baselines(baselines)
    out = Path(out_dir)
    names = list(feature_files)
    sets = {n: load_features(feature_files[n]) for n in names}
    first = sets[names[0]]
    plan = plan_sample(first.meta, n_slides=n_slides, per_slide=per_slide, min_per_slide=min_per_slide, k=k,
                       seed=seed)
    _check_color_by(first.meta, color_by)
    _say(plan.describe(), progress)
    feats = _same_patches(sets, feature_files, first.meta.iloc[plan.indices])
    cfg0 = _file_config(Path(feature_files[names[0]]))
    try:
        sub: Any = PatchTableDataset(feats[names[0]].meta, **_read_settings(sets[names[0]].key, cfg0))
    except ValueError:
        if baselines:
            raise
        sub, thumbnails = SubsetDataset(feats[names[0]], np.arange(len(plan.indices))), False
    sub.indices = plan.indices
    inputs: dict[str, Any] = {}
    refs: dict[str, Any] = {}
    if baselines:
        inputs, refs = _references_from_files(sets, feature_files, sub, baselines=baselines, out=out, seed=seed,
                                              batch_size=batch_size, progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"n_slides": n_slides, "per_slide": per_slide, "min_per_slide": plan.min_per_slide, "seed": seed,
                "method": method, "perplexity": perplexity, "lisi_perplexity": lisi_perplexity, "k": k,
                "n_boot": n_boot, "baselines": list(baselines), "color_by": color_by,
                "feature_files": {n: str(p) for n, p in feature_files.items()}}
    labels = {n: _key_input_label(sets[n].key) for n in names}
    return _analyse(sub, feats, inputs, refs, out=out, input_labels=labels, plan=plan, settings=settings, pairs=pairs,
                    thumbnails=thumbnails, progress=progress, include_plotlyjs=include_plotlyjs, n_jobs=n_jobs,
                    batch_size=batch_size)


def _same_patches(sets: Mapping[str, Any], files: Mapping[str, Any], sample: pd.DataFrame) -> dict[str, Any]:
    """Each file's feature set restricted to the ``sample`` rows (looked up by patch identity), in its order."""
    want = _identity_keys(sample)
    first = next(iter(files))
    out: dict[str, Any] = {}
    for n, fs in sets.items():
        pos = pd.Series(np.arange(len(fs.meta)), index=_identity_keys(fs.meta).to_numpy())
        pos = pos[~pos.index.duplicated()]
        miss = ~want.isin(pos.index)
        if miss.any():
            raise ValueError(f"{files[n]}: {int(miss.sum())} sampled patch(es) of {files[first]} are not in it; "
                             "panels must be features of the same patches (extract them from the same --tiles/--images)")
        out[n] = fs.subset(pos[want.to_numpy()].to_numpy())
    return out


def _references_from_files(sets: Mapping[str, Any], files: Mapping[str, Any], sub: Any, *, baselines: Sequence[str],
                           out: Path, seed: int, batch_size: int, progress: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each file's stain normalizer (for the colour rows) and the random-init twins of its encoder on ``sub``."""
    from ..features import extract_features

    inputs: dict[str, Any] = {}
    refs: dict[str, Any] = {}
    for n, fs in sets.items():
        cfg = _file_config(Path(files[n]))
        normalizer = normalizer_from_key(fs.key, backend=cfg.get("stain_backend", "auto"))
        inputs[n] = normalizer
        if "random" not in baselines:
            continue
        twin = random_twin_from_key(fs.key, seed=seed)
        name = f"random-init {twin.spec.timm_name} ({_norm_label(normalizer)})"
        if name in refs:
            continue
        prep = fs.key.get("preprocessing") or {}
        _say(f"reference: {name}", progress)
        refs[name] = extract_features(twin, sub, normalizer=normalizer, batch_size=batch_size,
                                      resize=prep.get("resize_size") is not None, crop=prep.get("crop_size") is not None,
                                      cache_path=out / "features" / f"{slug(name)}.h5", progress=progress)
    return inputs, refs


def _key_input_label(key: Mapping[str, Any]) -> str:
    ident = key.get("normalizer")
    return "raw" if ident is None else str(ident.get("class", "normalized")).replace("Normalizer", "").lower()
