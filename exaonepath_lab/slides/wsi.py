"""Open a whole-slide image and know its pixel size.

:func:`open_slide` wraps OpenSlide (SVS, NDPI, MRXS, generic/pyramidal TIFF, ...) and
resolves the slide's microns per pixel (MPP), the one number tiling cannot do
without (PROTOCOL.md §1: patch size = round(256 · 0.5 / MPP)). The MPP comes from,
in order: an explicit override, ``openslide.mpp-x/y``, the TIFF resolution tags
(``tiff.XResolution`` + ``tiff.ResolutionUnit`` in centimeter or inch), Aperio's
``MPP`` field. It is never guessed: a slide without one raises
:class:`MissingMPPError`, which tells the user to pass ``mpp_override=``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

# A scanner's pixel is between ~0.1 µm (100x oil) and a few µm (macro images).
# Resolution tags outside this range are defaults written by image editors
# (e.g. 72 dpi = 352.8 µm/px), not a measurement, so they are not trusted.
PLAUSIBLE_MPP = (0.05, 20.0)

PLAIN_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


class SlideReadError(ValueError):
    """A slide file is missing, corrupt or in a format OpenSlide cannot read."""


class MissingMPPError(ValueError):
    """The slide carries no usable pixel size and no override was given."""


def _mpp_from_properties(props: Mapping[str, str]) -> tuple[float | None, str]:
    """Return (mpp µm/px, source) from OpenSlide properties, or (None, reason)."""
    notes: list[str] = []
    mx, my = props.get("openslide.mpp-x"), props.get("openslide.mpp-y")
    if mx or my:
        try:
            vals = [float(v) for v in (mx, my) if v]
            mpp = float(np.mean(vals))
            if PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]:
                return mpp, "openslide.mpp"
            notes.append(f"openslide.mpp-x/y={mx}/{my} is implausible")
        except ValueError:
            notes.append(f"openslide.mpp-x/y={mx}/{my} is not a number")
    xres, unit = props.get("tiff.XResolution"), (props.get("tiff.ResolutionUnit") or "").lower()
    if xres:
        per_unit_um = {"centimeter": 1e4, "inch": 25400.0}.get(unit)
        try:
            x = float(xres)
            if per_unit_um is None:
                notes.append(f"tiff.XResolution={xres} has no physical unit (ResolutionUnit={unit or 'none'})")
            elif x > 0:
                yres = props.get("tiff.YResolution")
                y = float(yres) if yres else x
                mpp = float(np.mean([per_unit_um / x, per_unit_um / y]))
                if PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]:
                    return mpp, f"tiff.resolution ({unit})"
                notes.append(f"tiff resolution tags give {mpp:.4g} µm/px, outside {PLAUSIBLE_MPP}")
        except ValueError:
            notes.append(f"tiff.XResolution={xres} is not a number")
    aperio = props.get("aperio.MPP")
    if aperio:
        try:
            mpp = float(aperio)
            if PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]:
                return mpp, "aperio.MPP"
            notes.append(f"aperio.MPP={aperio} is implausible")
        except ValueError:
            notes.append(f"aperio.MPP={aperio} is not a number")
    return None, "; ".join(notes) or "no openslide.mpp-x, tiff resolution tags or aperio.MPP"


class Slide:
    """An open whole-slide image with its MPP.

    Attributes: ``path`` (Path), ``slide_id`` (file stem), ``mpp`` (µm/px at level 0),
    ``mpp_source`` (where the MPP came from), ``dimensions`` ((w, h) level 0 px),
    ``level_count``, ``level_dimensions``, ``level_downsamples``, ``properties``.
    Not picklable on purpose: worker processes reopen the slide by path.
    """

    def __init__(self, handle: Any, path: Path, *, mpp: float, mpp_source: str) -> None:
        self._h = handle
        self.path = path
        self.slide_id = path.stem
        self.mpp = float(mpp)
        self.mpp_source = mpp_source
        self.dimensions: tuple[int, int] = tuple(int(v) for v in handle.dimensions)  # type: ignore[assignment]
        self.level_count: int = int(handle.level_count)
        self.level_dimensions: tuple[tuple[int, int], ...] = tuple(
            (int(w), int(h)) for w, h in handle.level_dimensions
        )
        self.level_downsamples: tuple[float, ...] = tuple(float(d) for d in handle.level_downsamples)
        self.properties: dict[str, str] = dict(handle.properties)

    def __repr__(self) -> str:
        return (
            f"Slide({self.slide_id!r}, {self.dimensions[0]}x{self.dimensions[1]} px, "
            f"mpp={self.mpp:.4g} [{self.mpp_source}], levels={self.level_count})"
        )

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 (h, w, 3) of ``size`` (w, h) px at ``level``; ``location`` is level-0 (x, y).

        Transparent pixels (outside scanned area) are composited on white, as glass is white.
        """
        try:
            im = self._h.read_region((int(location[0]), int(location[1])), int(level), (int(size[0]), int(size[1])))
        except Exception as e:  # openslide.OpenSlideError, or decoding errors in damaged tiles
            raise SlideReadError(f"cannot read region {location} level {level} size {size} of {self.path}: {e}") from e
        return _rgba_to_rgb_on_white(np.asarray(im))

    def get_thumbnail(self, max_size: int | tuple[int, int]) -> np.ndarray:
        """RGB uint8 (h, w, 3) thumbnail fitting in ``max_size`` px (aspect ratio kept)."""
        if isinstance(max_size, (int, np.integer)):
            max_size = (int(max_size), int(max_size))
        try:
            im = self._h.get_thumbnail(tuple(int(v) for v in max_size))
        except Exception as e:
            raise SlideReadError(f"cannot build a thumbnail of {self.path}: {e}") from e
        arr = np.asarray(im)
        return _rgba_to_rgb_on_white(arr) if arr.ndim == 3 and arr.shape[2] == 4 else np.ascontiguousarray(arr[..., :3])

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """Index of the level whose downsample is the largest one ≤ ``downsample``."""
        return int(self._h.get_best_level_for_downsample(float(downsample)))

    def close(self) -> None:
        self._h.close()

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        raise TypeError(f"Slide objects are not picklable; pass the path ({self.path}) and reopen it in the worker")


def _rgba_to_rgb_on_white(arr: np.ndarray) -> np.ndarray:
    """(h, w, 4) RGBA → (h, w, 3) uint8 on a white background."""
    if arr.ndim != 3 or arr.shape[2] != 4:
        return np.ascontiguousarray(arr[..., :3]).astype(np.uint8, copy=False)
    rgb = arr[..., :3]
    a = arr[..., 3]
    if a.min() == 255:  # the common case: fully opaque, no arithmetic needed
        return np.ascontiguousarray(rgb)
    # openslide-python un-premultiplies the C library's ARGB, so compositing is rgb*a + 255*(1-a).
    af = a[..., None].astype(np.float32) / 255.0
    out = rgb.astype(np.float32) * af + 255.0 * (1.0 - af)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def open_slide(
    path: str | os.PathLike,
    *,
    mpp_override: float | None = None,
    allow_plain_images: bool = False,
) -> Slide:
    """Open a whole-slide image and resolve its MPP (µm/px at level 0).

    ``mpp_override`` wins over the metadata (recorded in ``Slide.mpp_source``).
    Plain PNG/JPEG files are only accepted with ``allow_plain_images=True`` (they
    carry no pyramid and usually no MPP, so an override is then required).
    Raises :class:`SlideReadError` (missing/corrupt/unsupported file) or
    :class:`MissingMPPError` (no usable MPP and no override).
    """
    import openslide

    p = Path(path)
    if not p.exists():
        raise SlideReadError(f"slide not found: {p}. Check the path (relative paths resolve from {Path.cwd()}).")
    if p.is_dir():
        raise SlideReadError(f"{p} is a directory, not a slide file (for MRXS pass the .mrxs file beside it)")
    if mpp_override is not None and not (mpp_override > 0):
        raise ValueError(f"mpp_override must be a positive number of µm/px, got {mpp_override} for {p}")
    handle: Any
    if p.suffix.lower() in PLAIN_IMAGE_SUFFIXES:
        if not allow_plain_images:
            raise SlideReadError(
                f"{p} is a plain image, not a whole-slide image. Pass allow_plain_images=True "
                "(and an mpp_override) to read it as a one-level slide."
            )
        try:
            handle = openslide.ImageSlide(str(p))
        except Exception as e:
            raise SlideReadError(f"cannot read image {p}: {e}") from e
    else:
        try:
            handle = openslide.OpenSlide(str(p))
        except openslide.OpenSlideUnsupportedFormatError as e:
            raise SlideReadError(
                f"OpenSlide does not recognise {p} as a slide ({e}). Supported: SVS, NDPI, MRXS, SCN, "
                "VMS, BIF, DICOM, (pyramidal) TIFF. Convert other formats to a pyramidal TIFF first."
            ) from e
        except Exception as e:  # OpenSlideError: a recognised but damaged file
            raise SlideReadError(f"cannot open slide {p}: {e}. The file is probably truncated or corrupt.") from e
    if mpp_override is not None:
        return Slide(handle, p, mpp=float(mpp_override), mpp_source="override")
    mpp, source = _mpp_from_properties(handle.properties)
    if mpp is None:
        handle.close()
        raise MissingMPPError(
            f"slide {p} has no usable pixel size (MPP): {source}. The kit never guesses it; pass "
            "mpp_override=<µm/px> (CLI: --mpp-override, or an `mpp` column in the manifest), "
            "e.g. 0.25 for a 40x scan or 0.5 for 20x."
        )
    return Slide(handle, p, mpp=mpp, mpp_source=source)
