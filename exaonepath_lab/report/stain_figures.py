"""Pictures of stain normalization (notebook 02): OD scatter, image rows and grids, the slide × method explorer.

Plotting only: the numbers come from :mod:`exaonepath_lab.stain` (estimates) and
:mod:`exaonepath_lab.stain.compare` (spreads).
"""
from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np


CAPTION_PT = 11
"""Font size of panel titles: readable at the notebook's default zoom (the old 7 pt were not)."""


def od_scatter(image: np.ndarray, od: np.ndarray, tissue: np.ndarray, *, title: str, n_points: int = 4000,
               seed: int = 0, vectors: Sequence[tuple[np.ndarray, str, str, str]] = ()) -> Any:
    """3-D plotly scatter of a random sample of tissue pixels in OD space, each in its own RGB colour.

    ``image`` ``(H, W, 3)`` uint8; ``od`` ``(H·W, 3)`` optical densities; ``tissue`` ``(H·W,)`` bool.
    ``vectors``: ``(unit OD vector, name, colour, dash)`` drawn as lines from the origin.
    """
    import plotly.graph_objects as go

    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(tissue)
    idx = rng.choice(idx, size=min(len(idx), n_points), replace=False)
    pts = od[idx]
    cols = [f"rgb({r},{g},{b})" for r, g, b in image.reshape(-1, 3)[idx]]
    fig = go.Figure(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers", name="tissue pixels",
                                 marker=dict(size=2, color=cols)))
    scale = float(pts.max()) if len(pts) else 1.0
    for vec, name, colour, dash in vectors:
        v = np.asarray(vec, dtype=float) * scale
        fig.add_trace(go.Scatter3d(x=[0, v[0]], y=[0, v[1]], z=[0, v[2]], mode="lines", name=name,
                                   line=dict(color=colour, width=6, dash=dash)))
    fig.update_layout(title=title, height=550, template="plotly_white",
                      scene=dict(xaxis_title="OD red", yaxis_title="OD green", zaxis_title="OD blue"))
    return fig


def image_row(panels: Sequence[tuple[np.ndarray, str]], *, size: float = 3.4) -> Any:
    """One row of images with titles (a 2-D array is drawn in grey); returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size + 0.4), squeeze=False)
    for ax, (im, title) in zip(axes[0], panels):
        ax.imshow(im, cmap="gray" if np.ndim(im) == 2 else None)
        ax.set_title(title, fontsize=CAPTION_PT)
        ax.axis("off")
    fig.tight_layout()
    return fig


def method_grid(variants: Mapping[str, Any], names: Sequence[str], *, cell: float = 2.2) -> Any:
    """Rows = methods, columns = images (one patch per slide); returns the matplotlib figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(variants), len(names), figsize=(cell * len(names), (cell + 0.3) * len(variants)),
                             squeeze=False)
    for r, (method, imgs) in enumerate(variants.items()):
        for c in range(len(names)):
            axes[r, c].imshow(imgs[c])
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(names[c], fontsize=CAPTION_PT - 2, rotation=20 if len(names) > 8 else 0)
        axes[r, 0].set_ylabel(method, fontsize=CAPTION_PT)
    fig.tight_layout()
    return fig


def _png_bytes(img: np.ndarray, size: int = 320) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(img)).resize((size, size), Image.Resampling.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def stain_explorer(variants: Mapping[str, Any], names: Sequence[str], *, status: Sequence[str] | None = None) -> Any:
    """An ipywidgets explorer (image dropdown × method toggle); ``None`` with a printed hint without ipywidgets."""
    try:
        import ipywidgets as widgets
    except ImportError:
        print("ipywidgets is not installed: `pip install ipywidgets` for the explorer; the figures show the same")
        return None
    names = list(names)
    image_dd = widgets.Dropdown(options=names, value=names[0], description="image")
    method_tb = widgets.ToggleButtons(options=list(variants), value=next(iter(variants)), description="method")
    picture = widgets.Image(format="png", width=320, height=320)
    caption = widgets.HTML()

    def _render(*_: Any) -> None:
        i = names.index(image_dd.value)
        picture.value = _png_bytes(variants[method_tb.value][i])
        st = f"; Macenko status: {status[i]}" if status is not None else ""
        caption.value = f"<b>{image_dd.value}</b>, {method_tb.value}{st}"

    image_dd.observe(_render, "value")
    method_tb.observe(_render, "value")
    _render()
    return widgets.VBox([image_dd, method_tb, picture, caption])
