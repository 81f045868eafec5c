"""``exaonepath-lab probe``: extract (cached) features of a downstream dataset and run the paper's linear probe."""
from __future__ import annotations

import argparse
import sys

from ._args import add_macenko_options, macenko_from_args, parse_key_values


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "probe",
        help="linear evaluation of a frozen encoder on a downstream dataset (Table 1 protocol)",
        description="Load DATASET from ROOT with the paper's splits (saved, so every encoder sees the same "
        "samples), Macenko-normalize every image (train and eval, as the paper; --no-normalize to opt out), "
        "extract features once into an HDF5 cache keyed by encoder + preprocessing + normalizer, "
        "then train the linear probe (SGD lr 0.1, momentum 0.9, no weight decay, batch 128, 12,500 "
        "iterations) for each seed and write OUT/<model>__<dataset>__linear.json for `exaonepath-lab table`, "
        "which marks every result whose protocol differs from the paper's.",
    )
    p.add_argument("--encoder", required=True, help="encoder name (exaonepath, timm:<name>, random:<name>, kit-dino ...; "
                   "see exaonepath_lab.encoders.list_encoders())")
    p.add_argument("--checkpoint", help="local weights file; never downloaded")
    p.add_argument("--dataset", required=True,
                   choices=["pcam", "mhist", "crc100k", "til", "msi_crc", "msi_stad", "synthetic", "folder"],
                   help="downstream dataset; 'synthetic' = tissue classes of a tiled synthetic cohort (ROOT = tiling "
                   "output); 'folder' = your own labelled patches, ROOT/<class>/<slide or patient>/*.png or a CSV with "
                   "path,label,slide (split by slide/patient)")
    p.add_argument("--root", required=True,
                   help="the root holding one folder per dataset (the same ROOT as `datasets check ROOT`; "
                   "data_manifests/README.md shows the tree) or the dataset's own folder; with --dataset folder, "
                   "the class folder or the CSV")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="--dataset folder: share of slides/patients for validation (saved with the split)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="--dataset folder: share of slides/patients for test (saved with the split)")
    p.add_argument("--out", required=True, help="output folder: result JSON, features/ cache, probe_config.json")
    p.add_argument("--model-name", help="row name in Table 1 (default: the encoder name)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="probe seeds (init + sampling order); 3 by default for mean ± std at modest cost")
    p.add_argument("--iterations", type=int, default=12_500, help="SGD iterations (paper: 12,500)")
    p.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (paper: 0.1)")
    p.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant",
                   help="constant (default: the paper gives one lr and no schedule) or cosine to 0 over the "
                   "iterations (DINO eval_linear's CosineAnnealingLR); see exaonepath_lab.probing.linear")
    p.add_argument("--batch-size-probe", type=int, default=128, help="probe batch size (paper: 128)")
    p.add_argument("--selection", choices=["best_val", "last"], default="best_val",
                   help="checkpoint reported on test: best validation top-1 (default; the paper builds val "
                   "splits but does not say how it uses them) or the last iterate; both are recorded")
    p.add_argument("--eval-every", type=int, default=500, help="validation interval in iterations for best_val")
    p.add_argument("--feature-norm", choices=["none", "standardize", "l2"], default="none",
                   help="feature scaling before the linear layer; none = DINO's plain linear layer on raw features "
                   "(the paper is silent)")
    p.add_argument("--knn", action="store_true", help="also run weighted k-NN (k=20, T=0.07) and write its result")
    add_macenko_options(p, "Macenko-normalize every image before the encoder, train and eval (the paper's protocol; "
                        "the default, kept for old command lines)", default=True)
    p.add_argument("--no-resize", action="store_true",
                   help="skip Resize(256)->CenterCrop(224) (only for encoders built for small tiles)")
    p.add_argument("--batch-size", type=int, default=64, help="extraction batch size")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader workers for image decoding")
    p.add_argument("--device", default="cpu", help="cpu or cuda; the encoder runs there")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (shared machines: keep it small)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the saved 80:20 split (keep it fixed across encoders)")
    p.add_argument("--split-dir", help="folder for split CSVs when ROOT is read-only (default ROOT/splits)")
    p.add_argument("--wsis", type=int, help="number of training WSIs of the encoder (Figure 1b)")
    p.add_argument("--patches", type=int, help="number of training patches of the encoder (Table 1)")
    p.add_argument("--encoder-kw", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra create_encoder keywords, e.g. img_size=96 (values parsed as JSON when possible)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from ..encoders import create_encoder
    from ..features import extract_features
    from ..io import sha256_json
    from ..probing.datasets import load_dataset
    from ..probing.evaluate import evaluate_features, write_result
    from ..probing.config import ProbeConfig
    from ..report.table1 import protocol_deviations

    torch.set_num_threads(max(1, args.threads))
    progress = not args.quiet
    out = Path(args.out)
    cfg = ProbeConfig(lr=args.lr, lr_schedule=args.lr_schedule, batch_size=args.batch_size_probe, iterations=args.iterations,
                      feature_norm=args.feature_norm, selection=args.selection, eval_every=args.eval_every,
                      seeds=tuple(args.seeds))
    # first: a bad stain option fails before any loading; a target image is fitted once, cached in OUT
    normalizer = macenko_from_args(args, target_cache=out / "stain_target.json")
    ds = load_dataset(args.dataset, args.root, split_seed=args.split_seed, split_dir=args.split_dir,
                      val_fraction=args.val_fraction, test_fraction=args.test_fraction)
    dataset = getattr(ds, "dataset_name", args.dataset)  # folder:<name> for the user's own patches
    print(f"{dataset}: " + ", ".join(f"{k} {v}" for k, v in ds.meta["split"].value_counts().sort_index().items())
          + (f" (from {getattr(ds, 'root', args.root)})" if getattr(ds, "root", None) is not None else ""))
    encoder = create_encoder(args.encoder, checkpoint=args.checkpoint, device=args.device, **parse_key_values(args.encoder_kw, "--encoder-kw"))
    model = args.model_name or args.encoder
    tag = sha256_json({"encoder": encoder.identity(), "norm": bool(normalizer), "target": args.stain_target,
                       "resize": not args.no_resize})[:12]
    cache = out / "features" / f"{dataset.replace(':', '_')}__{tag}.h5"
    fs = extract_features(encoder, ds, normalizer=normalizer, batch_size=args.batch_size, num_workers=args.num_workers,
                          cache_path=cache, progress=progress, resize=not args.no_resize, crop=not args.no_resize)
    print(f"features: {fs.features.shape} ({fs.cache_status}) -> {cache}")
    # A reused cache carries the meta of the run that wrote it; labels and splits must be today's
    # (e.g. another --split-seed). Rows are the same items in the same order (the cache key hashes them).
    fs.meta = ds.meta.reset_index(drop=True).copy()
    info = {"params": int(sum(p.numel() for p in encoder.model.parameters())), "wsis": args.wsis,
            "patches": args.patches, "encoder": args.encoder, "checkpoint": args.checkpoint}
    classes = list(getattr(ds, "classes", []) or []) or None
    cfg.save(out / "probe_config.json")
    methods = ["linear"] + (["knn"] if args.knn else [])
    for m in methods:
        res = evaluate_features(fs, dataset=dataset, model=model, method=m, config=cfg, classes=classes,
                                model_info=info, progress=progress)
        res["feature_cache"] = str(cache)
        res["stain_target"] = normalizer.target.provenance() if normalizer is not None else None
        res["protocol_deviations"] = protocol_deviations(res)
        path = write_result(res, out)
        t = res["test"]
        fails = {s: {k: v for k, v in c.items() if k not in ("ok", "none")} for s, c in res["normalization"].items()}
        print(f"{m}: test top-1 {t['top1']['mean']:.4f} ± {t['top1']['std']:.4f}, balanced acc "
              f"{t['balanced_accuracy']['mean']:.4f}, AUROC {t['auroc']['mean']:.4f} (n={res['n']}) -> {path}")
        if any(fails.values()):
            print(f"  stain normalization failures kept (policy {args.stain_policy}): {fails}", file=sys.stderr)
        if res["protocol_deviations"]:
            print(f"  protocol differs from the paper's: {'; '.join(res['protocol_deviations'])}", file=sys.stderr)
    return 0
