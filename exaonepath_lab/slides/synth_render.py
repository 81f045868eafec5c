"""Render a synthetic H&E slide from its :class:`~exaonepath_lab.slides.synth_spec.SlideSpec`.

Rendering happens in physical units so morphology scales with the pixel size:

1. On a 1 µm grid ("fine grid"): tissue shape, class regions (smooth noise fields whose
   biases are tuned to the slide's class mix), and per-class stain *concentration* fields
   (eosin of cytoplasm/collagen/necrosis, diffuse hematoxylin, fat vacuoles, gland lumina,
   stromal clefts, faint tissue edges, a fold, a pen mark).
2. At level-0 resolution: nuclei drawn one by one (cv2 ellipses, anti-aliased; size,
   shape, density and chromatin pattern per class: vesicular pleomorphic tumor nuclei with
   nucleoli, small dense lymphocytes, spindle fibroblasts aligned with collagen, karyorrhectic
   debris and ghost nuclei in necrosis, flat adipocyte nuclei on fat membranes) and
   collagen fibres (polylines following a smooth orientation field).
3. Beer–Lambert per row strip: ``OD = c_H·h + c_E·e (+ glass, ink)``, ``I = I0·exp(−OD)``,
   then the scanner: optical blur, sensor noise, tone curve (gamma). JPEG happens when the
   pyramid is written.

Concentrations are in OD units along unit stain vectors (nuclei ≈ 1–1.7, collagen ≈ 0.6–1,
cytoplasm ≈ 0.4), the range Macenko's reference ``maxCRef = [1.97, 1.03]`` describes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .synth_spec import CLASS_NAMES, PEN_INKS, Acquisition, SlideSpec

FINE_UM = 1.0
"""Cell size (µm) of the smooth fields; finer than any nucleus edge the blur leaves."""

CLASSMAP_CELL_UM = 8.0
"""Physical cell size of the saved class map (µm); its downsample is round(8 / mpp)."""

# Render classes: the class label is drawn first and the render class derived from it; tumour
# epithelium and the stroma between tumour nests render differently but both carry label 1 (tumor).
R_GLASS, R_TUMOR, R_STROMA, R_LYMPH, R_ADIPOSE, R_NECROSIS, R_TUMOR_STROMA = range(7)

# Per render class: base eosin (cytoplasm, collagen matrix, necrotic debris) and diffuse
# hematoxylin (basophilic cytoplasm, nuclear dust in necrosis), OD units.
E_BASE = np.array([0.0, 0.42, 0.50, 0.28, 0.02, 0.80, 0.45], dtype=np.float32)
H_BASE = np.array([0.0, 0.10, 0.03, 0.14, 0.00, 0.16, 0.04], dtype=np.float32)

# Correlation length (µm) of each class's region field: lymphoid aggregates are small and
# round, tumour and stroma large (tumor, stroma, lymphocytes, adipose, necrosis).
REGION_SCALE_UM = (420.0, 360.0, 170.0, 300.0, 240.0)


@dataclass(frozen=True)
class NucleusPopulation:
    """A kind of nucleus: where it lives, how many per µm², its size/shape/darkness."""

    name: str
    render_classes: tuple[int, ...]
    spacing_um: float  # density = 1 / spacing² (Poisson)
    radius_um: tuple[float, float]  # semi-major axis range
    aspect: tuple[float, float]  # minor/major ratio range
    od: tuple[float, float]  # hematoxylin OD range
    vesicular: bool = False  # open chromatin with a dark rim and a nucleolus
    aligned: bool = False  # oriented along the collagen direction field
    on_membrane: bool = False  # only where fat-cell membranes are


NUCLEI: tuple[NucleusPopulation, ...] = (
    NucleusPopulation("tumor", (R_TUMOR,), 11.5, (5.0, 8.0), (0.6, 0.95), (0.9, 1.35), vesicular=True),
    NucleusPopulation("lymphocyte", (R_LYMPH,), 7.0, (2.5, 3.3), (0.82, 1.0), (1.35, 1.8)),
    NucleusPopulation("til", (R_STROMA, R_TUMOR_STROMA, R_TUMOR), 40.0, (2.6, 3.4), (0.82, 1.0), (1.3, 1.7)),
    NucleusPopulation("fibroblast", (R_STROMA, R_TUMOR_STROMA), 24.0, (5.0, 9.0), (0.16, 0.3), (0.95, 1.35), aligned=True),
    NucleusPopulation("debris", (R_NECROSIS,), 7.0, (0.5, 2.2), (0.35, 1.0), (0.6, 1.6)),
    NucleusPopulation("ghost", (R_NECROSIS,), 18.0, (3.5, 5.5), (0.7, 1.0), (0.18, 0.35)),
    NucleusPopulation("adipocyte", (R_ADIPOSE,), 30.0, (4.0, 6.5), (0.2, 0.32), (0.9, 1.2), on_membrane=True),
)


@dataclass
class RenderedSlide:
    """A rendered slide in memory. ``rgb``: level 0 (H, W, 3) uint8 after the scanner model
    (JPEG not yet applied); ``classmap``: (ceil(H/ds), ceil(W/ds)) uint8 class index per
    ``classmap_downsample`` × ``classmap_downsample`` level-0 cell (value at the cell centre)."""

    spec: SlideSpec
    rgb: np.ndarray
    classmap: np.ndarray
    classmap_downsample: int
    stats: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- fields
def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale_um: float, *, cell_um: float = FINE_UM) -> np.ndarray:
    """Gaussian random field of unit std on a grid of ``shape`` cells of ``cell_um`` µm,
    correlation length ≈ ``scale_um``. float32 (h, w)."""
    import cv2

    step = max(scale_um / 3.0, cell_um)  # white noise on a coarse grid, then blur + cubic upsampling
    ch = int(math.ceil(shape[0] * cell_um / step)) + 4
    cw = int(math.ceil(shape[1] * cell_um / step)) + 4
    w = rng.standard_normal((ch, cw)).astype(np.float32)
    w = cv2.GaussianBlur(w, (0, 0), 1.0, borderType=cv2.BORDER_REFLECT)
    # Crop the 2-cell margins after resizing so the field has no border artefacts.
    big = cv2.resize(w, (int(round(cw * step / cell_um)), int(round(ch * step / cell_um))), interpolation=cv2.INTER_CUBIC)
    off = int(round(2 * step / cell_um))
    out = np.ascontiguousarray(big[off : off + shape[0], off : off + shape[1]])
    if out.shape != shape:  # rounding at tiny sizes
        out = cv2.resize(big, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    out -= out.mean()
    sd = float(out.std())
    return out / sd if sd > 0 else out


def _tissue_mask(rng: np.random.Generator, shape: tuple[int, int], coverage: float) -> np.ndarray:
    """bool (h, w) on the fine grid: one or two tissue pieces with irregular edges, glass
    around them (≥ ~100 µm at the slide border). Scored on a 4 µm grid (the edge roughness
    is ~15 µm), then upsampled: the fine grid would cost 16× for the same shape."""
    import cv2

    if coverage >= 0.999:
        return np.ones(shape, dtype=bool)
    cu = 4.0
    h, w = int(math.ceil(shape[0] * FINE_UM / cu)), int(math.ceil(shape[1] * FINE_UM / cu))
    yy = (np.arange(h, dtype=np.float32)[:, None] + 0.5) / h
    xx = (np.arange(w, dtype=np.float32)[None, :] + 0.5) / w
    score = np.full((h, w), -np.inf, dtype=np.float32)
    n_pieces = 1 + int(rng.random() < 0.4)
    for k in range(n_pieces):
        cy, cx = rng.uniform(0.4, 0.6, 2) if k == 0 else rng.uniform(0.2, 0.8, 2)
        ry, rx = (rng.uniform(0.3, 0.45, 2) if k == 0 else rng.uniform(0.12, 0.22, 2))
        a = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(a) + dy * np.sin(a)) / rx
        v = (-dx * np.sin(a) + dy * np.cos(a)) / ry
        score = np.maximum(score, 1.0 - (u * u + v * v))
    score += (0.3 * smooth_noise(rng, (h, w), 350.0, cell_um=cu) + 0.12 * smooth_noise(rng, (h, w), 70.0, cell_um=cu)
              + 0.06 * smooth_noise(rng, (h, w), 15.0, cell_um=cu))
    border = np.minimum(np.minimum(yy * h, (1 - yy) * h), np.minimum(xx * w, (1 - xx) * w)) * cu
    margin = min(300.0, 0.2 * min(shape) * FINE_UM)  # small test slides keep room for tissue
    score -= 3.0 * np.clip(1.0 - border / margin, 0, 1) ** 2
    thr = np.quantile(score, 1.0 - coverage)
    fine = cv2.resize(score, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return fine > thr


def _class_labels(rng: np.random.Generator, tissue: np.ndarray, proportions: tuple[float, ...]) -> np.ndarray:
    """uint8 (h, w) class index (0 glass, 1..5) on the fine grid, shares ≈ ``proportions``."""
    import cv2

    shape = tissue.shape
    p = np.asarray(proportions, dtype=np.float64)
    fields = [smooth_noise(rng, shape, s) for s in REGION_SCALE_UM]
    present = np.flatnonzero(p > 0)
    if len(present) == 1:
        lab = np.full(shape, present[0] + 1, dtype=np.uint8)
    else:
        sub = np.stack([f[::4, ::4][tissue[::4, ::4]] for f in fields], axis=1)  # (n, 5)
        bias = np.where(p > 0, 0.0, -np.inf)
        for it in range(60):  # raise the bias of under-represented classes; clipped, decaying steps
            share = np.bincount(np.argmax(sub + bias, axis=1), minlength=5) / max(len(sub), 1)
            upd = np.clip(0.5 * (np.log(np.maximum(p, 1e-9)) - np.log(np.maximum(share, 1e-3))), -0.3, 0.3)
            bias = np.where(p > 0, bias + upd * 0.95**it, -np.inf)
        best = np.full(shape, -np.inf, dtype=np.float32)
        lab = np.zeros(shape, dtype=np.uint8)
        for k in present:
            s = fields[k] + np.float32(bias[k])
            m = s > best
            best[m] = s[m]
            lab[m] = k + 1
    # Domain warp: ragged, interdigitating borders instead of smooth level sets.
    disp = 4.0 / FINE_UM
    mx = (np.arange(shape[1], dtype=np.float32)[None, :] + disp * smooth_noise(rng, shape, 18.0)).astype(np.float32)
    my = (np.arange(shape[0], dtype=np.float32)[:, None] + disp * smooth_noise(rng, shape, 18.0)).astype(np.float32)
    lab = cv2.remap(lab, mx, my, interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    lab[~tissue] = 0
    return lab


def _membranes(rng: np.random.Generator, shape: tuple[int, int], cell_um: float = 60.0) -> np.ndarray:
    """float32 (h, w) in [0, 1]: walls of polygonal fat cells (Voronoi cells, ~``cell_um`` wide)."""
    import cv2

    h, w = shape
    n = rng.poisson(h * w * FINE_UM**2 / cell_um**2) + 1
    src = np.ones(shape, dtype=np.uint8)
    src[rng.integers(0, h, n), rng.integers(0, w, n)] = 0
    _, lab = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    edge = np.zeros(shape, dtype=np.uint8)
    edge[:, 1:] |= (lab[:, 1:] != lab[:, :-1]).astype(np.uint8)
    edge[1:, :] |= (lab[1:, :] != lab[:-1, :]).astype(np.uint8)
    m = cv2.GaussianBlur(edge.astype(np.float32), (0, 0), 0.6 / FINE_UM)
    return np.clip(m * 2.2, 0, 1)


def _ellipses(shape: tuple[int, int], rng: np.random.Generator, centres: np.ndarray, r_um: tuple[float, float]) -> np.ndarray:
    """float32 (h, w) in [0, 1]: filled ellipses (gland lumina) at ``centres`` (n, 2) µm (x, y)."""
    import cv2

    img = np.zeros(shape, dtype=np.uint8)
    for (x, y), a, q, ang in zip(
        centres.tolist(), rng.uniform(*r_um, len(centres)).tolist(), rng.uniform(0.45, 1.0, len(centres)).tolist(),
        rng.uniform(0, 180, len(centres)).tolist(),
    ):
        c = (int(round(x / FINE_UM * 16)), int(round(y / FINE_UM * 16)))
        ax = (int(round(a / FINE_UM * 16)), int(round(a * q / FINE_UM * 16)))
        cv2.ellipse(img, c, ax, ang, 0, 360, 255, -1, cv2.LINE_AA, 4)
    return cv2.GaussianBlur(img.astype(np.float32) / 255.0, (0, 0), 0.8 / FINE_UM)


def _lookup(fine: np.ndarray, pts_um: np.ndarray) -> np.ndarray:
    """Nearest fine-grid value at points (n, 2) µm (x, y)."""
    h, w = fine.shape[:2]
    ix = np.clip((pts_um[:, 0] / FINE_UM).astype(np.int64), 0, w - 1)
    iy = np.clip((pts_um[:, 1] / FINE_UM).astype(np.int64), 0, h - 1)
    return fine[iy, ix]


def build_fine_fields(spec: SlideSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """All smooth fields of a slide on the fine grid (see the module docstring)."""
    import cv2

    shape = (int(math.ceil(spec.height_um / FINE_UM)), int(math.ceil(spec.width_um / FINE_UM)))
    tissue = _tissue_mask(rng, shape, spec.tissue_coverage)
    label = _class_labels(rng, tissue, spec.class_proportions)
    render = label.copy()
    # Tumour = nests of epithelium (~75 %) separated by desmoplastic stroma.
    nest = smooth_noise(rng, shape, 55.0)
    tum = label == 1
    if tum.any():
        thr = np.quantile(nest[tum][::7], 0.25)
        render[tum & (nest < thr)] = R_TUMOR_STROMA
    theta = (smooth_noise(rng, shape, 220.0) * 1.6).astype(np.float32)  # collagen direction (rad)

    area = spec.width_um * spec.height_um
    # Gland lumina inside tumour epithelium.
    c = rng.uniform(0, 1, (rng.poisson(area / 110.0**2), 2)) * [spec.width_um, spec.height_um]
    c = c[_lookup(render, c) == R_TUMOR] if len(c) else c
    void = _ellipses(shape, rng, c, (6.0, 22.0))
    void[render != R_TUMOR] = 0
    memb = _membranes(rng, shape)
    adip = render == R_ADIPOSE
    void[adip] = 1.0 - memb[adip]
    # Clefts between collagen bundles (retraction artefact), thin bands of a noise level set.
    cleft = (np.abs(smooth_noise(rng, shape, 60.0)) < 0.04) & (smooth_noise(rng, shape, 150.0) > 0.8)
    void[cleft & ((render == R_STROMA) | (render == R_TUMOR_STROMA))] = 0.85
    void[~tissue] = 0

    # Section thickness: faint at the tissue edge (first ~35 µm), slowly varying inside.
    dist = cv2.distanceTransform(tissue.astype(np.uint8), cv2.DIST_L2, 5) * FINE_UM if not tissue.all() else np.full(shape, 1e3, np.float32)
    thick = (0.4 + 0.6 * np.clip(dist / 35.0, 0, 1)) * (1.0 + 0.12 * smooth_noise(rng, shape, 400.0))
    if spec.fold and tissue.any():
        frng = np.random.default_rng([spec.seed, 1])  # own stream: a fold leaves the rest of the slide as is
        ys, xs = np.nonzero(tissue[::8, ::8])
        i = frng.integers(len(ys))
        py, px, a = ys[i] * 8, xs[i] * 8, frng.uniform(0, np.pi)
        yy = np.arange(shape[0], dtype=np.float32)[:, None] - py
        xx = np.arange(shape[1], dtype=np.float32)[None, :] - px
        d = (xx * np.sin(a) - yy * np.cos(a)) * FINE_UM
        thick *= 1.0 + 0.9 * np.exp(-((d / frng.uniform(25, 45)) ** 2))  # a fold doubles the section
    thick = (thick * tissue).astype(np.float32)

    e_noise = 1.0 + 0.22 * smooth_noise(rng, shape, 30.0)
    necro = render == R_NECROSIS
    e_noise[necro] *= 1.0 + 0.3 * smooth_noise(rng, shape, 20.0)[necro]  # blotchy necrotic eosin
    e0 = E_BASE[render] * np.clip(e_noise, 0.3, None)
    e0 += 0.75 * memb * adip  # fat-cell walls are thin eosinophilic lines
    h0 = H_BASE[render] * np.clip(1.0 + 0.6 * smooth_noise(rng, shape, 14.0) * necro, 0.2, None)
    open_ = (1.0 - void).astype(np.float32)
    fibre_w = np.isin(render, (R_STROMA, R_TUMOR_STROMA)).astype(np.float32)
    out = {
        "tissue": tissue,
        "label": label,
        "render": render,
        "theta": theta,
        "void": void,
        "membrane": memb,
        # Channels remapped to level 0 together: E conc., diffuse H conc., nuclear multiplier, fibre weight.
        "stack": np.ascontiguousarray(
            np.stack([e0 * open_ * thick, h0 * open_ * thick, thick, fibre_w * open_ * thick], axis=-1).astype(np.float32)
        ),
    }
    if spec.pen_mark:
        prng = np.random.default_rng([spec.seed, 2])  # own stream: the slide under the ink is unchanged
        ink = np.zeros(shape, dtype=np.uint8)
        t = np.linspace(0, 1, 12)
        x0, y0 = prng.uniform(0.1, 0.3) * shape[1], prng.uniform(0.05, 0.95) * shape[0]
        x1, y1 = prng.uniform(0.7, 0.9) * shape[1], prng.uniform(0.05, 0.95) * shape[0]
        bend = prng.uniform(-0.25, 0.25) * shape[0]
        pts = np.stack([x0 + (x1 - x0) * t, y0 + (y1 - y0) * t + bend * np.sin(np.pi * t)], 1)
        cv2.polylines(ink, [np.round(pts).astype(np.int32)], False, 255, int(prng.uniform(40, 70) / FINE_UM), cv2.LINE_AA)
        ink_f = cv2.GaussianBlur(ink.astype(np.float32) / 255.0, (0, 0), 6.0 / FINE_UM)
        out["ink"] = (ink_f * 0.9 * (1.0 + 0.25 * smooth_noise(prng, shape, 80.0))).clip(0, None).astype(np.float32)
    return out


# --------------------------------------------------------------------------- level-0 drawing
def draw_nuclei(spec: SlideSpec, rng: np.random.Generator, f: dict[str, np.ndarray], *, layer: np.ndarray) -> dict[str, int]:
    """Draw every nucleus population into ``layer`` (H, W) uint8, value = OD × 100. Returns counts."""
    import cv2

    mpp, area = spec.mpp, spec.width_um * spec.height_um
    counts: dict[str, int] = {}
    sh = 16.0 / mpp  # µm → 1/16-px fixed point (cv2 shift=4)
    for pop in NUCLEI:
        n = rng.poisson(area / pop.spacing_um**2)
        pts = rng.uniform(0, 1, (n, 2)) * [spec.width_um, spec.height_um]
        keep = np.isin(_lookup(f["render"], pts), pop.render_classes) & (_lookup(f["void"], pts) < 0.3 if not pop.on_membrane else True)
        if pop.on_membrane:
            keep &= _lookup(f["membrane"], pts) > 0.4
        pts = pts[keep]
        m = len(pts)
        counts[pop.name] = m
        if m == 0:
            continue
        a = rng.uniform(*pop.radius_um, m)
        b = a * rng.uniform(*pop.aspect, m)
        ang = np.degrees(_lookup(f["theta"], pts)) + rng.normal(0, 12, m) if pop.aligned else rng.uniform(0, 180, m)
        od = rng.uniform(*pop.od, m)
        if pop.vesicular:
            hyper = rng.random(m) < 0.25  # pleomorphism: some nuclei hyperchromatic, no visible nucleolus
            off = rng.uniform(-0.3, 0.3, (m, 2)) * a[:, None]
        cx, cy = np.round(pts[:, 0] * sh).astype(int), np.round(pts[:, 1] * sh).astype(int)
        ia, ib = np.maximum(np.round(a * sh), 8).astype(int), np.maximum(np.round(b * sh), 8).astype(int)
        val = np.clip(od * 100, 0, 255).astype(int)
        for j in range(m):
            c = (int(cx[j]), int(cy[j]))
            cv2.ellipse(layer, c, (int(ia[j]), int(ib[j])), float(ang[j]), 0, 360, int(val[j]), -1, cv2.LINE_AA, 4)
            if pop.vesicular and not hyper[j]:
                # Open chromatin: a paler centre inside a dark rim, then a nucleolus.
                cv2.ellipse(layer, c, (int(ia[j] * 0.68), int(ib[j] * 0.62)), float(ang[j]), 0, 360, int(val[j] * 0.55), -1, cv2.LINE_AA, 4)
                nc = (int(c[0] + off[j, 0] * sh), int(c[1] + off[j, 1] * sh))
                cv2.circle(layer, nc, int(0.8 * sh), int(min(255, val[j] * 1.5)), -1, cv2.LINE_AA, 4)
    return counts


def draw_fibres(spec: SlideSpec, rng: np.random.Generator, f: dict[str, np.ndarray], *, layer: np.ndarray) -> int:
    """Draw wavy collagen fibres (polylines along the orientation field) into ``layer`` (H, W) uint8."""
    import cv2

    n = rng.poisson(spec.width_um * spec.height_um / 140.0)
    p = rng.uniform(0, 1, (n, 2)) * [spec.width_um, spec.height_um]
    p = p[np.isin(_lookup(f["render"], p), (R_STROMA, R_TUMOR_STROMA))]
    m = len(p)
    if m == 0:
        return 0
    steps, step_um = 9, 4.5
    phase = rng.uniform(0, 2 * np.pi, m)
    path = np.empty((steps, m, 2))
    path[0] = p
    for i in range(1, steps):  # follow the direction field, with a gentle wave
        th = _lookup(f["theta"], path[i - 1]) + 0.3 * np.sin(phase + 0.9 * i)
        path[i] = path[i - 1] + step_um * np.stack([np.cos(th), np.sin(th)], 1)
    pix = np.round(path.transpose(1, 0, 2) * 16.0 / spec.mpp).astype(np.int32)  # (m, steps, 2), shift=4
    thick_um = rng.choice([0.8, 1.4, 2.4], m, p=[0.45, 0.35, 0.2])
    val = rng.choice([45, 65, 85], m)
    for t in np.unique(thick_um):
        for v in np.unique(val):
            sel = np.flatnonzero((thick_um == t) & (val == v))
            if len(sel):
                cv2.polylines(layer, list(pix[sel]), False, int(v), max(1, int(round(t / spec.mpp))), cv2.LINE_AA, 4)
    return m


# --------------------------------------------------------------------------- composition
def _rows(tex: np.ndarray, y0: int, h: int) -> np.ndarray:
    """Rows ``y0 .. y0+h`` of a vertically tiled texture (a view unless the strip wraps)."""
    r0 = y0 % tex.shape[0]
    if r0 + h <= tex.shape[0]:
        return tex[r0 : r0 + h]
    return tex[(np.arange(y0, y0 + h)) % tex.shape[0]]


class _Upsampler:
    """Bilinear upsampling of fine-grid fields to level-0 rows ``[y0, y1)``.

    Level-0 pixel x samples the fine grid at ``(x + 0.5)·mpp/FINE_UM − 0.5`` (pixel centres
    aligned, edges replicated). When ``FINE_UM/mpp`` is an integer (0.25, 0.5 MPP ...) and
    strips start on fine-grid rows, ``cv2.resize`` of the strip's rows plus one margin row is
    the same interpolation and ~3× faster than ``cv2.remap``; other MPPs use ``remap``.
    """

    def __init__(self, mpp: float, width: int, strip_px: int) -> None:
        self.mpp, self.W = mpp, width
        k = FINE_UM / mpp
        self.k = int(round(k)) if abs(k - round(k)) < 1e-9 and round(k) >= 1 else 0
        self.strip_px = max(self.k, (strip_px // self.k) * self.k) if self.k else strip_px
        self.mapx_row = ((np.arange(width) + 0.5) * mpp / FINE_UM - 0.5).astype(np.float32)
        self._padded: dict[int, np.ndarray] = {}
        self._bufs: dict[tuple, np.ndarray] = {}

    def __call__(self, field: np.ndarray, y0: int, y1: int) -> np.ndarray:
        import cv2

        if not self.k:
            ys = np.arange(y0, y1)
            mapx = np.ascontiguousarray(np.broadcast_to(self.mapx_row, (y1 - y0, self.W)))
            mapy = np.ascontiguousarray(np.broadcast_to(((ys + 0.5) * self.mpp / FINE_UM - 0.5).astype(np.float32)[:, None], (y1 - y0, self.W)))
            return cv2.remap(field, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        k = self.k
        pad = self._padded.get(id(field))
        if pad is None:  # one replicated row above and below: the image border rule of remap
            pad = np.concatenate([field[:1], field, field[-1:], field[-1:]], axis=0)
            self._padded[id(field)] = pad  # fields live as long as the render, ids stay valid
        r0, r1 = y0 // k, -(-y1 // k)
        rows = pad[r0 : r1 + 2]  # fine rows r0-1 .. r1 (padded index = row + 1)
        shape = (rows.shape[0] * k, rows.shape[1] * k) + rows.shape[2:]
        buf = self._bufs.get((id(field), shape))
        if buf is None:
            buf = self._bufs[(id(field), shape)] = np.empty(shape, np.float32)
        cv2.resize(rows, (shape[1], shape[0]), dst=buf, interpolation=cv2.INTER_LINEAR)
        return buf[k : k + (y1 - y0), : self.W]  # a view: valid until the next call for this field


class StainTable:
    """Beer–Lambert as a lookup table over quantized (c_H, c_E) concentrations.

    ``rgb = I0 · exp(−(h_scale·c_H·h + e_scale·c_E·e + OD_glass))`` tabulated on a
    ``1/steps_per_od`` OD grid up to ``max_od``: one gather per pixel instead of three
    exponentials (the step, 1/128 OD ≈ 2 grey levels on white, is below the sensor noise).
    """

    def __init__(self, acq: Acquisition, *, steps_per_od: int = 128, max_od: float = 4.0) -> None:
        self.q = float(steps_per_od)
        self.n = int(max_od * steps_per_od)
        c = np.arange(self.n, dtype=np.float64) / self.q
        h = np.asarray(acq.h_vector) * acq.h_scale
        e = np.asarray(acq.e_vector) * acq.e_scale
        od = c[:, None, None] * h + c[None, :, None] * e + acq.background_od  # (nH, nE, 3)
        rgb = np.asarray(acq.white_point) * np.exp(-od)
        self.table = np.clip(rgb + 0.5, 0, 255).astype(np.uint8).reshape(-1, 3)
        # Packed as one uint32 per entry (R, G, B, 255 in memory order): a 4-byte gather is
        # ~3x faster than gathering 3-byte rows.
        rgba = np.concatenate([self.table, np.full((len(self.table), 1), 255, np.uint8)], axis=1)
        self.packed = np.ascontiguousarray(rgba).view(np.uint32).ravel()

    def lookup(self, c_h: np.ndarray, c_e: np.ndarray, *, out: np.ndarray | None = None,
               idx: np.ndarray | None = None) -> np.ndarray:
        """RGB uint8 (..., 3) for concentration arrays ``c_h``, ``c_e`` (same shape, OD units);
        both arrays are overwritten. ``out``/``idx``: optional preallocated result / int32 scratch."""
        for c in (c_h, c_e):
            c *= self.q
            c += 0.5
            np.clip(c, 0, self.n - 1, out=c)
        if idx is None:
            idx = np.empty(c_h.shape, np.int32)
        np.copyto(idx, c_h, casting="unsafe")  # truncation = floor, values are ≥ 0
        idx *= self.n
        idx += c_e.astype(np.int32)
        rgba = np.take(self.packed, idx).view(np.uint8).reshape(*idx.shape, 4)
        if out is None:
            return np.ascontiguousarray(rgba[..., :3])
        np.copyto(out, rgba[..., :3])
        return out


def stain_table(acq: Acquisition) -> StainTable:
    """The Beer–Lambert lookup table of one acquisition."""
    return StainTable(acq)


def render_slide(spec: SlideSpec, *, strip_px: int = 256) -> RenderedSlide:
    """Render ``spec`` into a level-0 RGB array + class map. Deterministic for the spec.

    Memory: about 6 bytes per level-0 pixel plus the fine-grid fields (≈ 0.6 GB for a
    2.3 mm slide at 0.25 MPP).
    """
    rng = np.random.default_rng(spec.seed)
    W, H = spec.width_px, spec.height_px
    # The order of the draws from ``rng`` is part of the slide's identity: keep it.
    f = build_fine_fields(spec, rng)
    nuc = np.zeros((H, W), dtype=np.uint8)
    counts = draw_nuclei(spec, rng, f, layer=nuc)
    fib = np.zeros((H, W), dtype=np.uint8)
    counts["fibres"] = draw_fibres(spec, rng, f, layer=fib)
    tex = _tiled_textures(spec, rng)
    up = _Upsampler(spec.mpp, W, strip_px)
    rgb = _stain_strips(spec, f, nuc, fib, tex, up)
    _scan(rgb, spec, tex["noise"], up.strip_px)
    classmap, ds = _classmap(f["label"], spec)
    tissue_cells = classmap > 0
    fr = np.bincount(classmap[tissue_cells], minlength=len(CLASS_NAMES)) / max(int(tissue_cells.sum()), 1)
    stats = {
        "nuclei": counts,
        "tissue_fraction": float(tissue_cells.mean()),
        "class_fractions": {CLASS_NAMES[k]: float(fr[k]) for k in range(1, len(CLASS_NAMES))},
    }
    return RenderedSlide(spec=spec, rgb=rgb, classmap=np.ascontiguousarray(classmap), classmap_downsample=ds, stats=stats)


def _tiled_textures(spec: SlideSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Fine textures (chromatin/cytoplasm granularity, sensor noise), tiled over the slide's columns.

    A per-pixel RNG draw for 10^8 pixels would dominate the run time. Periods are primes so
    tiles never align. Returns ``g_nuc``, ``g_eos`` (float32 rows × W) and ``noise`` (int16 rows × W × 3).
    """
    import cv2

    grain = cv2.GaussianBlur(rng.standard_normal((509, 1021)).astype(np.float32), (0, 0), max(0.35 / spec.mpp, 0.5))
    grain /= grain.std()
    xs = np.arange(spec.width_px)
    # Factors used as is per pixel: nuclear chromatin (×0.01: layer is OD×100) and eosin granularity.
    g_nuc = np.ascontiguousarray((0.01 * (1.0 + 0.3 * grain))[:, xs % grain.shape[1]])
    g_eos = np.ascontiguousarray((1.0 + 0.18 * np.roll(grain, (101, 307), (0, 1)))[:, xs % grain.shape[1]])
    noise = np.round(rng.normal(0, spec.acquisition.noise_sigma, (503, 1019, 3))).astype(np.int16)
    return {"g_nuc": g_nuc, "g_eos": g_eos, "noise": np.ascontiguousarray(noise[:, xs % noise.shape[1]])}


def _stain_strips(spec: SlideSpec, f: dict[str, np.ndarray], nuc: np.ndarray, fib: np.ndarray,
                  tex: dict[str, np.ndarray], up: "_Upsampler") -> np.ndarray:
    """Hematoxylin and eosin amounts per pixel, strip by strip, looked up into transmitted RGB (H, W, 3) uint8."""
    W, H = spec.width_px, spec.height_px
    g_nuc, g_eos = tex["g_nuc"], tex["g_eos"]
    table = stain_table(spec.acquisition)
    ink_vec = np.asarray(PEN_INKS[spec.pen_mark], np.float32) if spec.pen_mark else None
    stack = f["stack"]
    stack[..., 3] *= 0.01  # fibre layer is OD × 100
    rgb = np.empty((H, W, 3), dtype=np.uint8)
    # Strip buffers reused across strips: fresh 10-MB temporaries per strip cost more in page
    # faults than in arithmetic.
    hs = up.strip_px
    b_n, b_h, b_e, b_t = (np.empty((hs, W), np.float32) for _ in range(4))
    b_idx = np.empty((hs, W), np.int32)
    for y0 in range(0, H, hs):
        y1 = min(H, y0 + hs)
        h = y1 - y0
        n, c_h, c_e, t, idx = b_n[:h], b_h[:h], b_e[:h], b_t[:h], b_idx[:h]
        st = up(stack, y0, y1)
        np.multiply(nuc[y0:y1], st[..., 2], out=n)
        n *= _rows(g_nuc, y0, h)
        np.add(st[..., 1], n, out=c_h)
        np.multiply(fib[y0:y1], st[..., 3], out=c_e)
        np.multiply(st[..., 0], _rows(g_eos, y0, h), out=t)
        c_e += t
        # Eosin under a nucleus is partly displaced by it.
        np.minimum(n, 1.0, out=t)
        t *= -0.5
        t += 1.0
        c_e *= t
        table.lookup(c_h, c_e, out=rgb[y0:y1], idx=idx)
        if ink_vec is not None:
            ink = up(f["ink"], y0, y1)
            if ink.max() > 1e-3:  # Beer–Lambert is multiplicative: ink attenuates what the stains let through
                rgb[y0:y1] = np.clip(rgb[y0:y1] * np.exp(-ink[..., None] * ink_vec) + 0.5, 0, 255).astype(np.uint8)
    return rgb


def _scan(rgb: np.ndarray, spec: SlideSpec, noise_cols: np.ndarray, hs: int) -> None:
    """The scanner, in place: optics blur the transmitted light; the sensor adds noise; the tone curve comes last."""
    import cv2

    acq = spec.acquisition
    H = rgb.shape[0]
    sigma_px = acq.blur_sigma_um / spec.mpp
    if sigma_px > 0.05:
        cv2.GaussianBlur(rgb, (0, 0), sigma_px, dst=rgb)
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** (1.0 / acq.gamma) + 0.5, 0, 255).astype(np.uint8)
    b_s = np.empty((hs, rgb.shape[1], 3), np.int16)
    for y0 in range(0, H, hs):
        y1 = min(H, y0 + hs)
        sn = b_s[: y1 - y0]
        np.add(rgb[y0:y1], _rows(noise_cols, y0, y1 - y0), out=sn)
        np.clip(sn, 0, 255, out=sn)
        out = rgb[y0:y1]
        np.copyto(out, sn, casting="unsafe")
        cv2.LUT(out, lut, dst=out)


def _classmap(label: np.ndarray, spec: SlideSpec) -> tuple[np.ndarray, int]:
    """Class index per ``CLASSMAP_CELL_UM`` cell, sampled from the fine label grid, and its downsample vs level 0."""
    W, H = spec.width_px, spec.height_px
    ds = max(1, int(round(CLASSMAP_CELL_UM / spec.mpp)))
    cy = ((np.arange(int(math.ceil(H / ds))) + 0.5) * ds * spec.mpp / FINE_UM).astype(np.int64)
    cx = ((np.arange(int(math.ceil(W / ds))) + 0.5) * ds * spec.mpp / FINE_UM).astype(np.int64)
    return label[np.clip(cy, 0, label.shape[0] - 1)][:, np.clip(cx, 0, label.shape[1] - 1)], ds


def estimate_tissue_patches(classmap: np.ndarray, downsample: int, mpp: float, *, patch_um: float = 128.0, min_tissue: float = 0.5) -> int:
    """Number of non-overlapping ``patch_um`` patches (256 px at 0.5 MPP) with ≥ ``min_tissue``
    tissue according to the class map: the ground truth a tiler should come close to."""
    cells = patch_um / (downsample * mpp)
    k = max(1, int(round(cells)))
    t = (classmap > 0).astype(np.float32)
    h, w = (t.shape[0] // k) * k, (t.shape[1] // k) * k
    if h == 0 or w == 0:
        return 0
    blocks = t[:h, :w].reshape(h // k, k, w // k, k).mean(axis=(1, 3))
    return int((blocks >= min_tissue).sum())
