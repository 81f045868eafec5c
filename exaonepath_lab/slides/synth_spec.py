"""What a synthetic slide is: its tissue, its stain and its scanner, as frozen dataclasses.

A :class:`SlideSpec` fixes everything :func:`exaonepath_lab.slides.synth_render.render_slide`
needs, so a slide is a pure function of its spec (same spec → same bytes). Specs of a
cohort are drawn by :func:`sample_cohort_specs` from one seed.

Acquisition differences are modelled physically (Beer–Lambert, as Macenko assumes):

- each slide has its own hematoxylin and eosin optical-density (OD) unit vectors, drawn
  around Ruifrok & Johnston's standard H&E vectors (stain batch, protocol, eosin Y vs
  phloxine ...), and its own stain strengths (staining time, section thickness, fading);
- the scanner adds a white point (illumination tint), a tone curve (gamma), optical blur,
  sensor noise and JPEG compression.

Everything Macenko can undo (stain vectors, per-stain strength) is drawn strongly; what
it cannot undo (tint, gamma, blur, noise) is drawn moderately, as in real multi-site
cohorts.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

CLASS_NAMES: tuple[str, ...] = ("background", "tumor", "stroma", "lymphocytes", "adipose", "necrosis")
"""Class index → name of the class maps; index 0 is glass (no tissue)."""

SYNTH_VERSION = "1"
"""Bumped whenever rendering changes, so cached slides of an older version are redrawn."""

# Ruifrok & Johnston (2001) OD vectors (R, G, B), the textbook H&E reference.
RUIFROK_H = (0.65, 0.70, 0.29)
RUIFROK_E = (0.07, 0.99, 0.11)
# Macenko et al.'s reference vectors (torchstain's HERef columns), estimated on real slides.
MACENKO_H = (0.5626, 0.7201, 0.4062)
MACENKO_E = (0.2159, 0.8012, 0.5581)
# Centre of the per-slide draws: halfway between the two references. Ruifrok's eosin has
# almost no red absorbance, so eosin-only pixels would fail Macenko's OD ≥ 0.15-in-every-channel
# test on every slide; eosin fitted on real slides absorbs some red and blue.
CENTRE_H = tuple(float(x) for x in (np.asarray(RUIFROK_H) / np.linalg.norm(RUIFROK_H) + np.asarray(MACENKO_H)) / 2)
CENTRE_E = tuple(float(x) for x in (np.asarray(RUIFROK_E) / np.linalg.norm(RUIFROK_E) + np.asarray(MACENKO_E)) / 2)

# Mean share of tissue area per class (tumor, stroma, lymphocytes, adipose, necrosis);
# each slide draws its own proportions around these (biological variation).
DEFAULT_CLASS_MIX = (0.30, 0.28, 0.15, 0.14, 0.13)

PEN_INKS: dict[str, tuple[float, float, float]] = {
    # OD vectors of marker inks (unit-free, absorbance per channel): green ink absorbs red and
    # blue, blue ink absorbs red and green, black absorbs all.
    "green": (0.85, 0.25, 0.75),
    "blue": (0.80, 0.55, 0.10),
    "black": (0.80, 0.80, 0.80),
}


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.abs(np.asarray(v, dtype=np.float64))
    return v / np.linalg.norm(v)


@dataclass(frozen=True)
class Acquisition:
    """Staining and scanning of one slide (what differs between labs).

    ``h_vector``/``e_vector``: unit OD vectors (R, G, B) of hematoxylin and eosin.
    ``h_scale``/``e_scale``: multipliers of the stain concentrations (1 = reference).
    ``white_point``: transmitted light through blank glass per channel, 0–255 (I0 of
    Beer–Lambert; tint of the lamp/white balance). ``gamma``: scanner tone curve,
    ``out = 255·(in/255)^(1/gamma)``. ``blur_sigma_um``: Gaussian optical blur (µm).
    ``noise_sigma``: sensor noise (grey levels, before the tone curve). ``jpeg_quality``:
    0–100. ``background_od``: OD of glass + mounting medium (dirty/yellowed slides).
    """

    h_vector: tuple[float, float, float] = CENTRE_H
    e_vector: tuple[float, float, float] = CENTRE_E
    h_scale: float = 1.0
    e_scale: float = 1.0
    white_point: tuple[float, float, float] = (245.0, 245.0, 245.0)
    gamma: float = 1.0
    blur_sigma_um: float = 0.3
    noise_sigma: float = 1.5
    jpeg_quality: int = 85
    background_od: float = 0.02
    site: str = "reference"

    def __post_init__(self) -> None:
        # Store unit vectors; leave already-unit ones bit-exact so a JSON round trip keeps the hash.
        for name in ("h_vector", "e_vector"):
            v = np.asarray(getattr(self, name), dtype=np.float64)
            if v.shape != (3,) or (v < 0).any() or not np.linalg.norm(v) > 0:
                raise ValueError(f"{name} must be 3 non-negative OD values (R, G, B), got {getattr(self, name)}")
            if abs(np.linalg.norm(v) - 1.0) > 1e-9:
                v = _unit(v)
            object.__setattr__(self, name, tuple(float(x) for x in v))
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Acquisition":
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)


@dataclass(frozen=True)
class SlideSpec:
    """One synthetic slide: id, pixel size, physical extent, tissue composition, acquisition.

    Sizes are physical (µm) so that a 0.25 MPP slide shows the same tissue as a 0.5 MPP
    one at twice the pixels. ``class_proportions`` are the target shares of tissue area
    for ``CLASS_NAMES[1:]`` (sum 1). ``tissue_coverage`` is the target share of the slide
    covered by tissue. ``pen_mark``: ink colour name in :data:`PEN_INKS` or ``""``;
    ``fold``: draw one tissue fold (a band of doubled tissue).
    """

    slide_id: str
    seed: int
    mpp: float = 0.5
    width_um: float = 2300.0
    height_um: float = 2300.0
    class_proportions: tuple[float, ...] = DEFAULT_CLASS_MIX
    tissue_coverage: float = 0.6
    acquisition: Acquisition = Acquisition()
    pen_mark: str = ""
    fold: bool = False

    def __post_init__(self) -> None:
        p = np.asarray(self.class_proportions, dtype=np.float64)
        if p.shape != (len(CLASS_NAMES) - 1,) or (p < 0).any() or p.sum() <= 0:
            raise ValueError(
                f"{self.slide_id}: class_proportions needs {len(CLASS_NAMES) - 1} non-negative shares for "
                f"{CLASS_NAMES[1:]}, got {self.class_proportions}"
            )
        if abs(p.sum() - 1.0) > 1e-9:  # renormalizing an already-normalized mix would drift its last bits
            p = p / p.sum()
        object.__setattr__(self, "class_proportions", tuple(float(x) for x in p))
        if not 0.05 <= self.mpp <= 5:
            raise ValueError(f"{self.slide_id}: mpp {self.mpp} µm/px is outside 0.05..5")
        if not 0 < self.tissue_coverage <= 1:
            raise ValueError(f"{self.slide_id}: tissue_coverage must be in (0, 1], got {self.tissue_coverage}")
        if self.pen_mark and self.pen_mark not in PEN_INKS:
            raise ValueError(f"{self.slide_id}: pen_mark {self.pen_mark!r} is not one of {sorted(PEN_INKS)} or ''")
        if min(self.width_um, self.height_um) < 16 * self.mpp:
            raise ValueError(f"{self.slide_id}: slide of {self.width_um}x{self.height_um} µm is too small")

    @property
    def width_px(self) -> int:
        """Level-0 width in px."""
        return int(round(self.width_um / self.mpp))

    @property
    def height_px(self) -> int:
        """Level-0 height in px."""
        return int(round(self.height_um / self.mpp))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = v.to_dict() if isinstance(v, Acquisition) else list(v) if isinstance(v, tuple) else v
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SlideSpec":
        kw = dict(d)
        kw["acquisition"] = Acquisition.from_dict(kw["acquisition"])
        kw["class_proportions"] = tuple(kw["class_proportions"])
        return cls(**kw)


# Component ranges (R, G, B) of unit OD vectors seen in published H&E stain estimates.
H_BOX = ((0.45, 0.72), (0.62, 0.84), (0.20, 0.50))
E_BOX = ((0.05, 0.35), (0.72, 0.99), (0.12, 0.65))


def _in_box(v: np.ndarray, box: tuple[tuple[float, float], ...]) -> bool:
    return all(lo <= x <= hi for x, (lo, hi) in zip(v, box))


def sample_acquisition(rng: np.random.Generator, *, site: str = "", strength: float = 1.0) -> Acquisition:
    """Draw one lab's staining + scanner. ``strength`` scales every deviation from the reference.

    Ranges (strength 1) were chosen so slides look like different labs: stain vectors
    within the ranges of published H&E estimates (``H_BOX``, ``E_BOX``), stain strengths ×0.6–1.6 (log-uniform), white point tint up to
    ~6%, gamma 0.8–1.25, blur 0.2–0.8 µm, noise 1–4 grey levels, JPEG quality 65–95.
    """
    s = float(strength)
    # Rejection-sample the vectors inside the hue ranges of published H&E stain estimates
    # (Ruifrok, Macenko's reference, Vahadane/Khan fits): hematoxylin stays blue-purple and
    # eosin pink-red; an unconstrained jitter can make hematoxylin grey-green, which no lab gets.
    h, e = _unit(np.asarray(CENTRE_H)), _unit(np.asarray(CENTRE_E))
    for _ in range(1000):
        hc = _unit(np.asarray(CENTRE_H) + rng.normal(0.0, 0.10 * s, 3))
        if _in_box(hc, H_BOX):
            h = hc
            break
    for _ in range(1000):
        ec = _unit(np.asarray(CENTRE_E) + rng.normal(0.0, 0.15 * s, 3))
        if _in_box(ec, E_BOX) and np.degrees(np.arccos(np.clip(np.dot(h, ec), -1, 1))) >= 25:
            e = ec
            break
    h, e = tuple(float(x) for x in h), tuple(float(x) for x in e)
    tint = rng.uniform(0.0, 0.06 * s, 3)
    white = tuple(float(x) for x in 250.0 * (1.0 - tint))
    return Acquisition(
        h_vector=h,
        e_vector=e,
        h_scale=float(np.exp(rng.uniform(np.log(0.6), np.log(1.6)) * s)),
        e_scale=float(np.exp(rng.uniform(np.log(0.55), np.log(1.7)) * s)),
        white_point=white,  # type: ignore[arg-type]
        gamma=float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)) * s)),
        blur_sigma_um=float(rng.uniform(0.2, 0.2 + 0.6 * s)),
        noise_sigma=float(rng.uniform(1.0, 1.0 + 3.0 * s)),
        jpeg_quality=int(rng.integers(int(95 - 30 * s), 96)),
        background_od=float(rng.uniform(0.0, 0.05 * s)),
        site=site,
    )


def sample_class_proportions(rng: np.random.Generator, *, concentration: float = 6.0, min_share: float = 0.05) -> tuple[float, ...]:
    """Per-slide class mix: Dirichlet around :data:`DEFAULT_CLASS_MIX`, each class ≥ ``min_share``.

    The floor keeps every class on every slide, so "same class, other slide" pairs exist
    for every class (needed by the robustness index of the collapse analysis).
    """
    p = rng.dirichlet(np.asarray(DEFAULT_CLASS_MIX) * concentration)
    p = np.maximum(p, min_share)
    return tuple(float(x) for x in p / p.sum())


def sample_cohort_specs(
    n_slides: int = 10,
    seed: int = 0,
    *,
    mpps: tuple[float, ...] = (0.5, 0.25),
    size_um: tuple[float, float] = (2300.0, 2800.0),
    coverage: tuple[float, float] = (0.42, 0.55),
    acquisition_strength: float = 1.0,
    pen_slides: int = 1,
    fold_slides: int = 1,
    prefix: str = "synth",
) -> list[SlideSpec]:
    """Draw the specs of a cohort: slide ``i`` gets ``mpps[i % len(mpps)]``.

    The default extent (2.3–2.8 mm square, 42–55 % tissue) gives roughly 150–300 tissue
    patches of 256 px at 0.5 MPP (128 µm) per slide. The first ``pen_slides`` slides with
    index ≥ 2 get a pen mark and the last ``fold_slides`` a tissue fold, so a default
    cohort has the classic artefacts without every slide being odd.
    """
    if n_slides < 1:
        raise ValueError(f"n_slides must be ≥ 1, got {n_slides}")
    root = np.random.SeedSequence(int(seed))
    children = root.spawn(n_slides)
    inks = sorted(PEN_INKS)
    specs = []
    for i, ss in enumerate(children):
        rng = np.random.default_rng(ss)
        slide_seed = int(rng.integers(0, 2**31 - 1))
        acq = sample_acquisition(rng, site=f"site{i:02d}", strength=acquisition_strength)
        pen = inks[i % len(inks)] if (2 <= i < 2 + pen_slides) else ""
        fold = i >= n_slides - fold_slides and n_slides > 2
        specs.append(
            SlideSpec(
                slide_id=f"{prefix}{i:02d}",
                seed=slide_seed,
                mpp=float(mpps[i % len(mpps)]),
                width_um=float(np.round(rng.uniform(*size_um))),
                height_um=float(np.round(rng.uniform(*size_um))),
                class_proportions=sample_class_proportions(rng),
                tissue_coverage=float(rng.uniform(*coverage)),
                acquisition=acq,
                pen_mark=pen,
                fold=bool(fold),
            )
        )
    return specs
