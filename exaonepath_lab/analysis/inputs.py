"""Open the patches a collapse analysis runs on, from whatever a user has: WSIs, a tiling output, images.

:func:`open_patches` is what ``exaonepath-lab audit`` and notebook 03 call with a user's path:

* a folder of WSIs or a CSV of them -> tiled first (``tiles_dir``; resumable), then read as tiles;
* a tiling output (``manifest.csv`` + ``patches/``) -> :class:`~exaonepath_lab.slides.dataset.TiledPatchDataset`;
* an image folder -> images in sub-folders are patches of the slide named by their folder (symbolic
  links followed); an image directly in the folder is one slide, cut into ``patch_px`` tissue patches.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def input_kind(path: Path, kind: str = "auto") -> str:
    """'wsi', 'tiles' or 'images' for ``path`` (see the module docstring)."""
    if kind != "auto":
        return kind
    if not path.exists():
        raise FileNotFoundError(f"audit input not found: {path}")
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return "wsi"
        raise ValueError(f"{path}: a file must be a CSV of slides; pass a folder for tiles or images")
    if (path / "manifest.csv").exists() and (path / "patches").is_dir():
        return "tiles"
    if any(f.is_file() and _is_wsi(f) for f in path.iterdir()):
        return "wsi"
    return "images"


def _is_wsi(f: Path) -> bool:
    """A slide file: a vendor format, or a TIFF that OpenSlide opens with more than one level (pyramidal)."""
    from ..tiling.run import SLIDE_SUFFIXES

    suffix = f.suffix.lower()
    if suffix not in SLIDE_SUFFIXES:
        return False
    if suffix not in (".tif", ".tiff"):
        return True
    try:
        import openslide

        with openslide.OpenSlide(str(f)) as s:
            return s.level_count > 1
    except Exception:  # not a slide OpenSlide reads: a plain TIFF image
        return False


class _Concat:
    """Item datasets one after the other, with one ``meta`` (columns united)."""

    def __init__(self, parts: list[Any]) -> None:
        import numpy as np
        import pandas as pd

        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])
        self.meta = pd.concat([p.meta for p in parts], ignore_index=True)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict[str, Any]:
        import numpy as np

        j = int(np.searchsorted(self.offsets, i, side="right") - 1)
        item = dict(self.parts[j][int(i - self.offsets[j])])
        item["index"] = int(i)
        return item

    def check_readable(self, indices: Any) -> None:
        """Each part's ``check_readable`` (where it has one) on its share of ``indices``."""
        import numpy as np

        idx = np.asarray(indices, dtype=int)
        for j, part in enumerate(self.parts):
            mine = idx[(idx >= self.offsets[j]) & (idx < self.offsets[j + 1])] - self.offsets[j]
            if hasattr(part, "check_readable") and len(mine):
                part.check_readable(mine)


def image_dataset(root: Path, *, patch_px: int = 224, class_dirs: bool = False) -> Any:
    """Patches of an image folder: images in sub-folders are patches of the slide named by their folder
    (symbolic links followed); an image directly in ``root`` is one slide, cut into ``patch_px`` tissue patches."""
    from ..datasets import IMAGE_SUFFIXES, ImageFolderDataset, find_images
    from ..features.patch_grid import GridPatchDataset

    files = find_images(root)
    top = [f for f in files if f.parent == root]
    nested = [f for f in files if f.parent != root]
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}; expected FOLDER/<slide>/<patch>.png "
                         "or whole images in FOLDER")
    parts = []
    if nested:
        parts.append(ImageFolderDataset(root, labels_from_dirs=class_dirs, paths=nested))
    if top:
        parts.append(GridPatchDataset({f.stem: [f] for f in top}, patch_px=patch_px))
    return parts[0] if len(parts) == 1 else _Concat(parts)


def open_patches(
    path: str | Path,
    *,
    kind: str = "auto",
    tiles_dir: str | Path | None = None,
    out_px: int | None = None,
    patch_px: int = 224,
    class_dirs: bool = False,
    mpp: float | None = None,
    workers: int = 1,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """(item dataset, description) of the patches at ``path``; see the module docstring.

    Args:
        kind: ``auto`` | ``wsi`` | ``tiles`` | ``images``.
        tiles_dir: where WSIs are tiled (required for WSI input; a rerun resumes there).
        out_px: tiles: read patches resized to this many px (default: the tiler's target_px).
        patch_px: images: side of the patches cut from whole images.
        mpp: WSIs: µm/px for every slide instead of its metadata.
    """
    src = Path(path)
    kind = input_kind(src, kind)
    info: dict[str, Any] = {"input": str(src), "kind": kind}
    if kind == "wsi":
        from ..tiling import TileConfig, run_tiling

        if tiles_dir is None:
            raise ValueError(f"{src}: WSI input needs tiles_dir= (where the tiling output goes)")
        res = run_tiling(str(src), tiles_dir, TileConfig(mpp_override=mpp), workers=workers, progress=progress)
        m = res.manifest
        info["tiling"] = f"{len(m)} slides, statuses {m['status'].value_counts().to_dict()} -> {tiles_dir}"
        src, kind = Path(tiles_dir), "tiles"
    if kind == "tiles":
        from ..slides.dataset import TiledPatchDataset

        ds = TiledPatchDataset(src, out_px=out_px)
        excl = getattr(ds, "excluded", None)
        if excl is not None and len(excl):
            # with the reason (the error names the fix), on the terminal before compute and in the report
            info["slides excluded by tiling"] = "; ".join(
                f"{r.slide_id}: {r.status}" + (f" ({r.error})" if isinstance(r.error, str) and r.error else "")
                for r in excl.itertuples())
    else:
        if out_px:
            raise ValueError("out_px applies to WSI/tiles input; image patches are used as they are")
        ds = image_dataset(src, patch_px=patch_px, class_dirs=class_dirs)
        empty = [sid for part in getattr(ds, "parts", [ds]) for sid in getattr(part, "empty", [])]
        if empty:
            info["images without a tissue patch (left out)"] = (
                f"{', '.join(empty)}: no {patch_px} px patch with tissue ≥ 50 %; fix: a smaller --patch-px")
    info["patches found"] = f"{len(ds)} patches of {ds.meta['slide_id'].nunique()} slides"
    return ds, info
