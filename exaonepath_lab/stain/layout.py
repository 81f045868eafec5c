"""Accept images in the layouts people actually pass, and give them back the same way.

Accepted: numpy or torch uint8 ``(H, W, 3)`` or ``(N, H, W, 3)``; torch uint8
``(3, H, W)`` or ``(N, 3, H, W)``; a PIL image. Internally everything becomes a
torch uint8 tensor ``(N, H·W, 3)`` on the compute device.

Float input is refused: torchstain runs silently on float images in [0, 1] and
returns wrong colours (its optical density assumes 0–255), a trap PROTOCOL.md §2 names.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import numpy as np
import torch


@dataclasses.dataclass
class Batch:
    """Pixels ``(N, H·W, 3)`` uint8 plus what is needed to restore the caller's layout."""

    pixels: torch.Tensor
    height: int
    width: int
    kind: str  # "numpy" | "torch"
    layout: str  # "HWC" | "NHWC" | "CHW" | "NCHW"
    device: torch.device  # the caller's device (torch input) or cpu

    @property
    def n(self) -> int:
        return int(self.pixels.shape[0])

    def restore(self, pixels: torch.Tensor) -> Any:
        """``(N, H·W, 3)`` uint8 → the caller's layout and container."""
        x = pixels.reshape(self.n, self.height, self.width, 3)
        if self.layout in ("CHW", "NCHW"):
            x = x.permute(0, 3, 1, 2)
        if self.layout in ("HWC", "CHW"):
            x = x[0]
        if self.kind == "numpy":
            return x.contiguous().cpu().numpy()
        return x.contiguous().to(self.device)


def _dtype_error(dtype: Any) -> ValueError:
    return ValueError(
        f"stain normalization expects uint8 RGB images in [0, 255], got dtype {dtype}. Float images in "
        "[0, 1] (e.g. after ToTensor()) would give wrong optical densities (torchstain accepts them "
        "silently). Convert first: (x * 255).round().clip(0, 255).astype(np.uint8) for numpy, "
        "(x * 255).round().clamp(0, 255).to(torch.uint8) for torch; or normalize before ToTensor()."
    )


def to_batch(images: Any, device: torch.device | str | None = None) -> Batch:
    """Convert ``images`` (see module docstring) to a :class:`Batch` on ``device``.

    ``device=None`` keeps a torch input on its own device and puts numpy on the CPU.
    """
    if not isinstance(images, (np.ndarray, torch.Tensor)):
        try:
            from PIL import Image

            if isinstance(images, Image.Image):
                images = np.asarray(images.convert("RGB"))
        except ImportError:  # pragma: no cover - PIL is a dependency
            pass
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise _dtype_error(images.dtype)
        kind, src_device = "numpy", torch.device("cpu")
        with warnings.catch_warnings():
            # Read-only arrays (np.asarray(PIL image)) are fine: the input is never written to.
            warnings.simplefilter("ignore", UserWarning)
            t = torch.from_numpy(np.ascontiguousarray(images))
    elif isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8:
            raise _dtype_error(images.dtype)
        kind, src_device = "torch", images.device
        t = images
    else:
        raise TypeError(
            f"images must be a numpy array, torch tensor or PIL image, got {type(images).__name__}; "
            "for a list of images use np.stack (same size) or normalize them one by one"
        )
    shape = tuple(t.shape)
    if t.ndim == 3 and shape[-1] == 3:
        layout, t = "HWC", t.unsqueeze(0)
    elif t.ndim == 3 and shape[0] == 3 and kind == "torch":
        layout, t = "CHW", t.permute(1, 2, 0).unsqueeze(0)
    elif t.ndim == 4 and shape[-1] == 3:
        layout = "NHWC"
    elif t.ndim == 4 and shape[1] == 3 and kind == "torch":
        layout, t = "NCHW", t.permute(0, 2, 3, 1)
    else:
        hint = " (drop the alpha channel: x[..., :3])" if shape and shape[-1] == 4 else ""
        raise ValueError(
            f"expected RGB images shaped (H, W, 3) or (N, H, W, 3) (torch also (3, H, W), (N, 3, H, W)), "
            f"got {kind} shape {shape}{hint}"
        )
    n, h, w, _ = t.shape
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"empty image batch of shape {shape}")
    dev = torch.device(device) if device is not None else src_device
    pixels = t.to(dev).reshape(n, h * w, 3)
    return Batch(pixels=pixels, height=int(h), width=int(w), kind=kind, layout=layout, device=src_device)
