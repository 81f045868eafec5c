"""Feature-extraction, embedding and collapse-metric speed; prints ONE JSON line.

- extraction: ViT-B/16 (EXAONEPath's architecture, random init) on real 256 px H&E patches, our
  ``extract_features`` (dataset -> Resize 256 -> CenterCrop 224 -> mean/std -> forward) vs a plain
  timm + torchvision loop doing the same work (ratio = ours / plain, > 1 is faster). CUDA too when
  available (bf16 not used: features are compared in fp32).
- embeddings on 10,000 × 768 (10 "slides" × 1,000): openTSNE (the paper's method) and UMAP seconds;
  sklearn's TSNE as the reference on a 1,000-point subset against openTSNE on the same subset
  (sklearn on 10,000 points takes many minutes on 2 cores).
- collapse metrics (purity, iLISI, silhouette, slide probe, RI, 200 bootstrap replicates) seconds.

Usage: ``nice -n 10 .venv/bin/python benchmarks/bench_features.py [--quick]``
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

def patches_256(n: int) -> tuple[list[np.ndarray], str]:
    """``n`` real 256 px patches (cycled) of one large image: the wider set's downsampled whole slide when
    ``$EXAONEPATH_LAB_REAL_HE`` names it, else the sample data's CMU-1 region; and the set's label."""
    from _data import he_images
    from exaonepath_lab.datasets import read_rgb

    (path,), data_set = he_images(["multi_source/histoprep_slide.jpeg"], sample=["cmu-small-region.svs"])
    img = read_rgb(path)
    h, w = img.shape[:2]
    out = [img[y:y + 256, x:x + 256] for y in range(0, h - 255, 256) for x in range(0, w - 255, 256)]
    return [out[i % len(out)] for i in range(n)], data_set


class ListDataset:
    def __init__(self, imgs: list[np.ndarray]) -> None:
        import pandas as pd

        self.imgs = imgs
        self.meta = pd.DataFrame({"slide_id": "s", "x": np.arange(len(imgs)), "y": 0})

    def __len__(self) -> int:
        return len(self.imgs)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.imgs[i], "index": i}


def bench_extract(n: int, device: str, batch: int) -> dict:
    from PIL import Image
    from torchvision import transforms as T

    from exaonepath_lab.encoders import create_encoder
    from exaonepath_lab.features import extract_features

    imgs, data_set = patches_256(n)
    enc = create_encoder("random:exaonepath", device=device)
    ds = ListDataset(imgs)
    extract_features(enc, ListDataset(imgs[:batch]), batch_size=batch, progress=False)  # warm-up
    t = time.perf_counter()
    fs = extract_features(enc, ds, batch_size=batch, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    ours = time.perf_counter() - t

    tf = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    model = enc.model
    t = time.perf_counter()
    outs = []
    with torch.no_grad():
        for lo in range(0, n, batch):
            x = torch.stack([tf(Image.fromarray(im)) for im in imgs[lo:lo + batch]]).to(device)
            outs.append(model(x).float().cpu())
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    plain = time.perf_counter() - t
    diff = float(np.abs(torch.cat(outs).numpy() - fs.features).max())
    return {"images": n, "data_set": data_set, "ours_img_s": n / ours, "plain_timm_img_s": n / plain, "ratio": plain / ours,
            "max_abs_diff_vs_plain": diff}


def bench_embed(n_slides: int, per: int, sk_n: int) -> dict:
    from exaonepath_lab.analysis import collapse_metrics, embed

    rng = np.random.default_rng(0)
    lab = np.repeat(np.arange(n_slides), per)
    x = (rng.normal(size=(n_slides * per, 768)) + 0.3 * rng.normal(size=(n_slides, 768))[lab]).astype(np.float32)
    import pandas as pd

    meta = pd.DataFrame({"slide_id": lab.astype(str), "label": rng.integers(0, 3, len(lab))})
    res: dict = {"n": len(x)}
    t = time.perf_counter()
    embed(x, "tsne", seed=0)
    res["opentsne_s"] = time.perf_counter() - t
    t = time.perf_counter()
    embed(x, "umap", seed=0)
    res["umap_s_incl_numba_compile"] = time.perf_counter() - t
    t = time.perf_counter()
    embed(x, "umap", seed=1)
    res["umap_s"] = time.perf_counter() - t
    t = time.perf_counter()
    collapse_metrics(x, meta, n_boot=200)
    res["metrics_s"] = time.perf_counter() - t
    # Reference: sklearn TSNE vs openTSNE on the same subset, same preprocessing (L2 + PCA 50).
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    sub = x[rng.choice(len(x), sk_n, replace=False)]
    sub = sub / np.linalg.norm(sub, axis=1, keepdims=True)
    z = PCA(50, random_state=0).fit_transform(sub)
    t = time.perf_counter()
    TSNE(perplexity=30, init="pca", random_state=0, n_jobs=2).fit_transform(z)
    res[f"sklearn_tsne_s_{sk_n}"] = time.perf_counter() - t
    t = time.perf_counter()
    embed(sub, "tsne", seed=0)
    res[f"opentsne_s_{sk_n}"] = time.perf_counter() - t
    res["tsne_ratio_sklearn_over_opentsne"] = res[f"sklearn_tsne_s_{sk_n}"] / res[f"opentsne_s_{sk_n}"]
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out: dict = {"bench": "features", "threads": a.threads, "torch": torch.__version__}
    out["extract_cpu"] = bench_extract(16 if a.quick else 64, "cpu", 16)
    if torch.cuda.is_available():
        out["extract_cuda"] = bench_extract(512 if a.quick else 4096, "cuda", 256)
        out["gpu"] = torch.cuda.get_device_name()
    else:
        out["extract_cuda"] = "no CUDA device here (path: create_encoder(..., device='cuda'))"
    out["embed_metrics"] = bench_embed(10, 100 if a.quick else 1000, 500 if a.quick else 1000)
    print(json.dumps(out, default=float))


if __name__ == "__main__":
    main()
