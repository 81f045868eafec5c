"""Batched feature extraction over any item dataset, cached and resumable.

``extract_features(encoder, dataset, normalizer=..., cache_path=...)`` reads uint8 patches,
optionally Macenko-normalizes them (batched, statuses kept per item, never dropped), applies
the encoder's preprocessing (Resize -> CenterCrop -> mean/std, each switchable for small
tiles) and returns a :class:`~exaonepath_lab.features.cache.FeatureSet`. With ``cache_path``
the result is an HDF5 cache keyed by everything that produced it; a matching cache is
reused, a different one is recomputed (saying which part of the key changed), and a killed
run resumes from its last finished chunk.

The key covers every input that changes the pixels the encoder sees (:func:`make_key`):
the patch list (including each patch's µm/px), how the dataset reads it (``out_px``, MPP
overrides, its ``transform``: :func:`dataset_identity`), the stain normalizer (method,
constants, target, failure policy) and the encoder's preprocessing (resize/crop sizes,
``--no-resize``), besides the encoder itself.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.data

from ..encoders.preprocess import Preprocessing
from .cache import FeatureSet, PartStore, describe_key_difference, load_features, patch_list_sha256, read_key, save_features
from .preprocess import _public_state, check_image, normalize_stain, normalizer_identity

log = logging.getLogger(__name__)


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # Patches may differ in size (image folders): keep a list, resize later in groups.
    return items


def _say(msg: str, progress: bool) -> None:
    log.info(msg)
    if progress:
        print(f"[extract] {msg}", file=sys.stderr)


def transform_identity(transform: Any) -> Any:
    """JSON-able identity of an image transform, stable across processes (for cache keys).

    ``identity()``/``config()``/``to_dict()`` when the transform offers one; a function by
    its qualified name, a hash of its byte code and constants, its defaults and closure;
    ``functools.partial`` by its function and arguments; an object with its own ``repr``
    (torchvision transforms, ``Compose``) by that repr; anything else by its public state.
    """
    if transform is None:
        return None
    if isinstance(transform, functools.partial):
        return {"partial": transform_identity(transform.func),
                "args": [transform_identity(a) if callable(a) else _public_state(a) for a in transform.args],
                "keywords": {k: transform_identity(v) if callable(v) else _public_state(v)
                             for k, v in sorted(transform.keywords.items())}}
    if inspect.ismethod(transform):
        return {"method": transform_identity(transform.__func__), "self": transform_identity(transform.__self__)}
    if inspect.isfunction(transform):
        code = transform.__code__
        h = hashlib.sha256(code.co_code + repr(code.co_consts).encode() + repr(code.co_names).encode()).hexdigest()
        cells = [c.cell_contents for c in transform.__closure__ or ()]
        return {"function": f"{transform.__module__}.{transform.__qualname__}", "code_sha256": h,
                "defaults": _public_state(transform.__defaults__),
                "closure": [transform_identity(v) if callable(v) else _public_state(v) for v in cells]}
    ident = normalizer_identity(transform) if any(
        callable(getattr(transform, m, None)) for m in ("identity", "config", "to_dict")) else None
    if ident is not None:
        return ident
    cls = type(transform)
    name = f"{cls.__module__}.{cls.__qualname__}"
    r = repr(transform)
    if cls.__repr__ is not object.__repr__ and " at 0x" not in r:
        # Parts that describe themselves (a MacenkoTransform's normalizer: its full config, which its
        # repr abbreviates) are added; plain state such as usage counters is not (it changes with use).
        parts = {k: normalizer_identity(v) for k, v in sorted(getattr(transform, "__dict__", {}).items())
                 if not k.startswith("_") and any(callable(getattr(v, m, None)) for m in ("identity", "config", "to_dict"))}
        return {"class": name, "repr": r, **({"parts": parts} if parts else {})}
    return {"class": name, "state": _public_state(transform)}


def dataset_identity(dataset: Any) -> dict[str, Any]:
    """How ``dataset`` turns its patch list into pixels: class, read size, MPP overrides, transform.

    ``out_px`` (patches read resized to that many px) and ``mpp_overrides`` (the µm/px a
    slide is opened with) of slide datasets, and every dataset's ``transform``. A wrapper
    with ``.dataset`` (a subset) is described by what it wraps. A dataset may add its own
    entries with a ``read_identity()`` method.
    """
    inner = getattr(dataset, "dataset", None)
    if inner is not None and hasattr(inner, "meta"):
        return {"class": type(dataset).__name__, "of": dataset_identity(inner)}
    d: dict[str, Any] = {"class": type(dataset).__name__}
    for attr in ("out_px", "mpp_overrides"):
        if hasattr(dataset, attr):
            d[attr] = _public_state(getattr(dataset, attr))
    d["transform"] = transform_identity(getattr(dataset, "transform", None))
    extra = getattr(dataset, "read_identity", None)
    if callable(extra):
        d.update(extra())
    return d


def make_key(encoder: Any, pre: Preprocessing, *, normalizer: Any, meta: Any, dataset: Any = None) -> dict[str, Any]:
    """The cache key: encoder identity, preprocessing, normalizer identity, how the dataset reads, patch-list hash.

    ``dataset``: the item dataset (its read size, MPP overrides and transform enter the
    key through :func:`dataset_identity`); ``None`` records none.
    """
    key = {
        "encoder": encoder.identity(),
        "preprocessing": pre.describe(),
        "normalizer": normalizer_identity(normalizer),
        "dataset": dataset_identity(dataset) if dataset is not None else None,
        "patch_list_sha256": patch_list_sha256(meta),
        "n_items": int(len(meta)),
    }
    return json.loads(json.dumps(key, sort_keys=True, default=str))  # tuples -> lists, as stored


def extract_features(
    encoder: Any,
    dataset: Any,
    *,
    normalizer: Any = None,
    batch_size: int = 64,
    num_workers: int = 0,
    cache_path: str | Path | None = None,
    progress: bool = True,
    device: str | torch.device | None = None,
    resize: bool = True,
    crop: bool = True,
    chunk_size: int | None = None,
    recompute: bool = False,
    max_chunks: int | None = None,
) -> FeatureSet:
    """Features of every item of ``dataset`` (item protocol of :mod:`exaonepath_lab.datasets`).

    Args:
        encoder: an :class:`~exaonepath_lab.encoders.Encoder` (``.identity()``, ``.mean``, ``.std``,
            ``.input_size``, ``.resize_size``, ``__call__(N×3×H×W) -> N×D``).
        dataset: items ``{"image": uint8 (H, W, 3)}`` and a ``meta`` DataFrame (N rows).
        normalizer: stain normalizer (``.normalize(uint8 N×H×W×3)`` -> ``.images``, ``.status``) or None.
        resize, crop: switch the encoder's Resize(resize_size)/CenterCrop(input_size) off (small tiles).
        cache_path: HDF5 file; reused only if its key matches, else recomputed.
        chunk_size: items per resumable chunk (default ``16 × batch_size``).
        max_chunks: stop after computing this many new chunks (returns None-free partial state on
            disk and raises ``InterruptedError``; used to test resumption and to split long jobs).
        device: move the encoder there first (e.g. ``"cuda"``); default: where it already is.

    Returns:
        FeatureSet with ``features`` (N, D) float32 in dataset order, ``meta`` = ``dataset.meta``,
        ``key`` and ``norm_status`` ("none" when ``normalizer`` is None). ``cache_status`` (attribute)
        says "computed", "reused", "resumed (k/n chunks on disk)" or "recomputed (...)".
    """
    meta = dataset.meta.reset_index(drop=True).copy()
    n = len(meta)
    if n == 0:
        raise ValueError("extract_features: the dataset is empty (meta has no rows)")
    if device is not None and torch.device(device) != getattr(encoder, "device", None):
        encoder.model.to(device)
        encoder.device = torch.device(device)
    pre = Preprocessing.for_encoder(encoder, resize=resize, crop=crop)
    key = make_key(encoder, pre, normalizer=normalizer, meta=meta, dataset=dataset)
    cached, status_note = _check_cache(cache_path, key, recompute=recompute, progress=progress)
    if cached is not None:
        return cached
    chunk_size = int(chunk_size or 16 * batch_size)
    n_chunks = (n + chunk_size - 1) // chunk_size
    parts = None
    if cache_path is not None:
        parts = PartStore(cache_path, key, chunk_size)
        status_note = _resume_parts(parts, n_chunks, cache_path=cache_path, status_note=status_note, progress=progress)
    feats, stats = _extract_chunks(encoder, dataset, pre, normalizer, parts, n_chunks=n_chunks, chunk_size=chunk_size,
                                   batch_size=batch_size, num_workers=num_workers, max_chunks=max_chunks,
                                   progress=progress)
    fs = FeatureSet(np.concatenate(feats), meta, key, np.concatenate(stats))
    fs.cache_status = status_note
    if cache_path is not None:
        save_features(cache_path, fs)
        parts.remove()  # type: ignore[union-attr]
    counts = fs.status_counts()
    if normalizer is not None and set(counts) - {"ok"}:
        _say(f"stain-normalization statuses: {counts} (kept; see FeatureSet.norm_status)", progress)
    return fs


def _check_cache(cache_path: str | Path | None, key: dict[str, Any], *, recompute: bool,
                 progress: bool) -> tuple[FeatureSet | None, str]:
    """The cached FeatureSet when its key matches; otherwise None and why the features are computed."""
    status_note = "computed"
    if cache_path is None or recompute:
        return None, status_note
    old = read_key(cache_path)
    if old == key:
        fs = load_features(cache_path)
        fs.cache_status = "reused"
        _say(f"reusing {cache_path} (key matches)", progress)
        return fs, "reused"
    if old is not None:
        status_note = f"recomputed (cache differs in: {describe_key_difference(old, key)})"
        _say(f"{cache_path}: {status_note}", progress)
    elif Path(cache_path).exists():
        status_note = "recomputed (existing file is not a readable feature cache)"
        _say(f"{cache_path}: {status_note}", progress)
    return None, status_note


def _resume_parts(parts: PartStore, n_chunks: int, *, cache_path: str | Path, status_note: str, progress: bool) -> str:
    """Open the per-chunk store of an interrupted run; the status note says how much was on disk."""
    msg = parts.open()
    if msg:
        _say(msg, progress)
    n_done = sum(parts.done(c) for c in range(n_chunks))
    if n_done:
        status_note = f"resumed ({n_done}/{n_chunks} chunks on disk)"
        _say(f"{cache_path}: {status_note}", progress)
    return status_note


def _extract_chunks(encoder: Any, dataset: Any, pre: Preprocessing, normalizer: Any, parts: PartStore | None, *,
                    n_chunks: int, chunk_size: int, batch_size: int, num_workers: int, max_chunks: int | None,
                    progress: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Features and stain statuses chunk by chunk; chunks on disk are read, new ones written as they finish."""
    from tqdm.auto import tqdm

    n = len(dataset.meta)
    feats: list[np.ndarray] = []
    stats: list[np.ndarray] = []
    new = 0
    on_gpu = torch.device(getattr(encoder, "device", "cpu")).type == "cuda"
    bar = tqdm(total=n, disable=not progress, desc=f"features {encoder.name}", unit="img")
    try:
        for c in range(n_chunks):
            lo, hi = c * chunk_size, min(n, (c + 1) * chunk_size)
            if parts is not None and parts.done(c):
                f, s = parts.read(c)
                feats.append(f)
                stats.append(s)
                bar.update(hi - lo)
                continue
            if max_chunks is not None and new >= max_chunks:
                raise InterruptedError(f"stopped after {new} new chunks (max_chunks); rerun to resume")
            f, st = _run_chunk(encoder, dataset, range(lo, hi), pre, normalizer, batch_size, num_workers, on_gpu, bar)
            feats.append(f)
            stats.append(np.array(st, dtype=str))
            if parts is not None:
                parts.write(c, f, st)
            new += 1
    finally:
        bar.close()
    return feats, stats


def _run_chunk(encoder: Any, dataset: Any, idx: range, pre: Preprocessing, normalizer: Any,
               batch_size: int, num_workers: int, on_gpu: bool, bar: Any) -> tuple[np.ndarray, list[str]]:
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, list(idx)), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, collate_fn=_collate, pin_memory=False,
    )
    out: list[np.ndarray] = []
    status: list[str] = []
    for items in loader:
        imgs = [check_image(it["image"], f"{type(dataset).__name__}[{it.get('index', '?')}]") for it in items]
        if normalizer is not None:
            imgs, st = normalize_stain(normalizer, imgs)
        else:
            st = ["none"] * len(imgs)
        # On CUDA, preprocess on the GPU (uint8 transfer); on CPU, where the encoder is.
        x = pre(imgs, device=getattr(encoder, "device", None) if on_gpu else None)
        out.append(encoder(x).detach().cpu().numpy().astype(np.float32))
        status.extend(st)
        bar.update(len(items))
    return np.concatenate(out), status
