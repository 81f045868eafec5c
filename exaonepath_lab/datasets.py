"""The one item protocol every image dataset of the kit follows.

A dataset is a ``torch.utils.data.Dataset`` whose ``__getitem__(i)`` returns a dict
``{"image": uint8 ndarray (H, W, 3) RGB, "index": i}`` (after an optional
``transform`` applied to the image), and which exposes ``meta``: a
``pandas.DataFrame`` with one row per item (columns such as ``slide_id``, ``x``,
``y``, ``patch_size``, ``label``, ``path``). Extraction, caching, sampling,
probing and plotting read ``meta`` instead of iterating the images, and a cache is
keyed on it.

:class:`ImageFolderDataset` lives here because every layer (stain CLI, pretraining,
features, probing) needs it; slide-backed datasets live in
:mod:`exaonepath_lab.slides.dataset`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch.utils.data

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); errors name the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}. Re-export it as PNG/JPEG/TIFF RGB.") from e


class ItemDataset(torch.utils.data.Dataset):
    """Base class: subclasses implement ``load_image(i)`` and set ``self.meta``."""

    meta: pd.DataFrame
    transform: Callable[[np.ndarray], Any] | None = None

    def __len__(self) -> int:
        return len(self.meta)

    def load_image(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict[str, Any]:
        img = self.load_image(int(i))
        if self.transform is not None:
            img = self.transform(img)
        return {"image": img, "index": int(i)}


class FileItemDataset(ItemDataset):
    """Items that are image files listed in a table (``meta.path``), e.g. a downstream dataset's patches."""

    def __init__(self, meta: pd.DataFrame, transform: Callable[[np.ndarray], Any] | None = None) -> None:
        self.meta = meta.reset_index(drop=True)
        self.transform = transform

    def load_image(self, i: int) -> np.ndarray:
        return read_rgb(self.meta.at[i, "path"])

    def check_readable(self, indices: Sequence[int]) -> None:
        """Open the header of every image at ``indices`` (no decoding: fast); a ValueError names every file
        that is not an image, before a long run would meet the first one mid-way."""
        from PIL import Image, UnidentifiedImageError

        bad = []
        for i in indices:
            path = self.meta.at[int(i), "path"]
            try:
                with Image.open(path):
                    pass
            except (UnidentifiedImageError, OSError) as e:
                bad.append(f"{path} ({type(e).__name__})")
        if bad:
            raise ValueError(f"{len(bad)} file(s) are not readable images: {', '.join(bad[:10])}"
                             f"{' ...' if len(bad) > 10 else ''}. Fix: re-export them as PNG/JPEG/TIFF RGB, or move "
                             "them out of the image folder.")


def find_images(root: str | Path) -> list[Path]:
    """Image files under ``root``, sorted, following symbolically linked folders (a cohort assembled
    from links is common); each real folder is visited once, so a link cycle cannot loop. Hidden files
    are skipped. Paths keep the link names (the slide id is the folder name as the user sees it)."""
    import os

    root = Path(root)
    seen: set[str] = set()
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out += [Path(dirpath) / f for f in filenames
                if Path(f).suffix.lower() in IMAGE_SUFFIXES and not f.startswith(".")]
    return sorted(out)


class ImageFolderDataset(FileItemDataset):
    """Images under ``root``; with ``labels_from_dirs`` the first sub-folder is the class.

    ``meta`` columns: ``path``, ``slide_id`` (the parent folder name, so a folder of
    tiles per slide works as a cohort), ``label`` (int, -1 if none), ``class_name``.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        labels_from_dirs: bool = True,
        classes: Sequence[str] | None = None,
        transform: Callable[[np.ndarray], Any] | None = None,
        paths: Sequence[str | Path] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder not found: {self.root}")
        files = sorted(Path(p) for p in paths) if paths is not None else find_images(self.root)
        if not files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {self.root}")
        rel = [f.relative_to(self.root) for f in files]
        top = [r.parts[0] if len(r.parts) > 1 else "" for r in rel]
        if labels_from_dirs and any(top):
            self.classes = list(classes) if classes is not None else sorted(set(t for t in top if t))
            lut = {c: i for i, c in enumerate(self.classes)}
            labels = [lut.get(t, -1) for t in top]
        else:
            self.classes = list(classes or [])
            labels = [-1] * len(files)
        self.meta = pd.DataFrame(
            {
                "path": [str(f) for f in files],
                "slide_id": [f.parent.name for f in files],
                "label": labels,
                "class_name": [self.classes[l] if l >= 0 else "" for l in labels],
            }
        )
        self.transform = transform
