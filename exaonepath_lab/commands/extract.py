"""``exaonepath-lab extract``: features of tiled slides or an image folder into an HDF5 cache."""
from __future__ import annotations

import argparse
import sys

from ._args import add_macenko_options, macenko_from_args, parse_key_values


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "extract",
        help="extract frozen-encoder features (optionally Macenko-normalized) into a resumable HDF5 cache",
        description="Read patches (a tiling output folder or an image folder), optionally Macenko-normalize them "
        "(batched; failures kept and counted, never dropped), apply the encoder's preprocessing (Resize 256 "
        "bicubic -> CenterCrop 224 -> mean/std, as the paper's evaluation) and write FEATURES.h5 with features, "
        "the item table and a key of everything that produced them. A rerun with the same inputs reuses the "
        "file; a killed run resumes from its last finished chunk.",
    )
    p.add_argument("--encoder", required=True,
                   help="encoder name: exaonepath, kit-dino, uni, phikon, gigapath, lunit-vits16, virchow, "
                   "timm:<name>, random:<preset|timm_name> (see exaonepath_lab.encoders.list_encoders())")
    p.add_argument("--checkpoint", help="local weights file (.pth/.ckpt/.bin/.safetensors); the kit never downloads")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--tiles", help="tiling output folder (manifest.csv + patches/*.h5) from `exaonepath-lab tile`")
    src.add_argument("--images", help="image folder; the parent folder of each image is its slide id")
    p.add_argument("--class-dirs", action="store_true",
                   help="with --images: the first sub-folder is the biological class (FOLDER/<class>/<slide>/img.png), "
                   "enabling the SO share of the collapse metrics; off by default because FOLDER/<slide>/img.png is the common layout")
    p.add_argument("--out", required=True, help="output HDF5 file (FEATURES.h5); its config goes to FEATURES.h5.config.json")
    add_macenko_options(p, "Macenko-normalize every patch first (the paper does, at extraction and probing)")
    p.add_argument("--no-resize", action="store_true",
                   help="skip Resize->CenterCrop (small tiles an encoder was built for, e.g. 96 px with img_size=96)")
    p.add_argument("--out-px", type=int,
                   help="with --tiles: read patches resized to this many px (default: the tiler's target_px)")
    p.add_argument("--max-per-slide", type=int,
                   help="with --tiles: random subset of this many patches per slide (seeded); default all")
    p.add_argument("--seed", type=int, default=0, help="seed of --max-per-slide")
    p.add_argument("--batch-size", type=int, default=64,
                   help="images per forward pass (64: fits CPU RAM for ViT-B; raise on GPU)")
    p.add_argument("--num-workers", type=int, default=0,
                   help="DataLoader workers decoding patches (0 on shared 2-core machines)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (keep small on shared machines)")
    p.add_argument("--encoder-kw", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra create_encoder keywords, e.g. img_size=96 (values parsed as JSON when possible)")
    p.add_argument("--recompute", action="store_true", help="ignore an existing cache with the same key")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..encoders import create_encoder
    from ..features import extract_features
    from ..features.config import ExtractConfig

    torch.set_num_threads(max(1, args.threads))
    # first: a bad stain option fails before any loading; a target image is fitted once and cached beside OUT
    normalizer = macenko_from_args(args, target_cache=f"{args.out}.stain_target.json")
    cfg = ExtractConfig(
        encoder=args.encoder, checkpoint=args.checkpoint, tiles=args.tiles, images=args.images, out=args.out,
        normalize=args.normalize, stain_target=args.stain_target, stain_policy=args.stain_policy,
        stain_backend=args.stain_backend, resize=not args.no_resize, crop=not args.no_resize,
        batch_size=args.batch_size, num_workers=args.num_workers, device=args.device,
        max_per_slide=args.max_per_slide, out_px=args.out_px, seed=args.seed, encoder_kw=tuple(args.encoder_kw),
    )
    if args.tiles:
        from ..slides.dataset import TiledPatchDataset

        ds = TiledPatchDataset(args.tiles, out_px=args.out_px, max_per_slide=args.max_per_slide, seed=args.seed)
    else:
        if args.out_px or args.max_per_slide:
            raise ValueError("--out-px/--max-per-slide apply to --tiles only")
        from ..datasets import ImageFolderDataset

        ds = ImageFolderDataset(args.images, labels_from_dirs=args.class_dirs)
        ds.check_readable(range(len(ds)))  # headers only: a non-image is named now, not mid-extraction
    encoder = create_encoder(args.encoder, checkpoint=args.checkpoint, device=args.device, **parse_key_values(args.encoder_kw, "--encoder-kw"))
    fs = extract_features(encoder, ds, normalizer=normalizer, batch_size=args.batch_size, num_workers=args.num_workers,
                          cache_path=args.out, progress=not args.quiet, resize=cfg.resize, crop=cfg.crop,
                          recompute=args.recompute)
    cfg.save(f"{args.out}.config.json")
    counts = fs.status_counts()
    print(f"{args.out}: {fs.features.shape[0]} × {fs.features.shape[1]} features of {fs.meta['slide_id'].nunique()} "
          f"slides ({fs.cache_status}); normalization status: {counts}")
    if normalizer is not None:
        prov = normalizer.target.provenance()
        print(f"  Macenko target: {prov['name']} (sha256 {prov['sha256'][:16]}...; recorded in the file's key)")
    if normalizer is not None and set(counts) - {"ok"}:
        print(f"  {sum(v for k, v in counts.items() if k != 'ok')} patch(es) could not be normalized and were kept "
              f"under policy {args.stain_policy!r} (see norm_status in the file)", file=sys.stderr)
    return 0
