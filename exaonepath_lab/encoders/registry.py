"""One way in: ``create_encoder(name, checkpoint=...)`` -> a frozen :class:`Encoder`.

A registry dict maps names to :class:`EncoderSpec` (architecture + preprocessing), as
timm does; name prefixes (``timm:``, ``random:``) are a second small registry. Weights
always come from a local file the user supplies — the kit never downloads
(``pretrained=False`` is forced by :func:`exaonepath_lab.models.build_backbone`).

Names:

- ``exaonepath`` — DINO ViT-B/16 (embed 768, depth 12, 12 heads, qkv bias, LayerNorm eps
  1e-6, no classifier); released file holds ``state_dict`` with DINO/timm key names.
- ``kit-dino`` — a checkpoint of our own DINO training (teacher backbone, architecture read
  from the checkpoint).
- ``uni``, ``phikon``, ``gigapath``, ``lunit-vits16``, ``virchow`` — presets of Table 1's
  pathology encoders (architecture, mean/std); weights from the user's local file.
- ``timm:<timm_name>`` — any timm model, weights from a local .safetensors/.pth/.bin.
- ``random:<preset or timm_name>`` — seeded random init (tests; the random-init reference
  of the collapse metrics, same architecture and preprocessing as the preset).

Your own encoder: :func:`register_encoder` (a spec, or a factory), then ``create_encoder(name, ...)``;
:func:`list_encoders` takes fnmatch patterns.
"""
from __future__ import annotations

import dataclasses
import fnmatch
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ..io import sha256_file
from ..models import IMAGENET_MEAN, IMAGENET_STD, build_backbone, embed_dim_of, load_kit_checkpoint
from .checkpoint import LoadReport, hf_vit_to_timm, load_strict, load_weights_file, select_state_dict, strip_prefixes

#: Lunit's own statistics of their pretraining data (github.com/lunit-io/benchmark-ssl-pathology).
LUNIT_MEAN = (0.70322989, 0.53606487, 0.66096631)
LUNIT_STD = (0.21716536, 0.26081574, 0.20723464)


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """Architecture and preprocessing of a named encoder.

    ``timm_kwargs`` may hold classes (e.g. ``mlp_layer``); :meth:`describe` turns them into
    names for cache keys. ``key_mapper`` converts foreign key names (e.g. Hugging Face) to timm.
    """

    timm_name: str
    timm_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int = 224
    resize_size: int = 256
    key_mapper: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
    description: str = ""

    def describe(self) -> dict[str, Any]:
        """JSON-able description (classes replaced by their qualified names)."""
        kw = {k: (f"{v.__module__}.{v.__qualname__}" if isinstance(v, type) else v) for k, v in self.timm_kwargs.items()}
        return {"timm_name": self.timm_name, "timm_kwargs": kw}


def _swiglu() -> dict[str, Any]:
    from timm.layers import SwiGLUPacked

    return {"mlp_layer": SwiGLUPacked, "act_layer": nn.SiLU}


def _presets() -> dict[str, EncoderSpec]:
    return {
        "exaonepath": EncoderSpec(
            "vit_base_patch16_224",
            # timm's vit_base_patch16_224 is DINO's vit_base: qkv bias, LayerNorm eps 1e-6, CLS after norm.
            {"img_size": 224},
            description="EXAONEPath 1.0 (DINO ViT-B/16, 768-d CLS); checkpoint: the released .ckpt/.pth with 'state_dict'",
        ),
        "uni": EncoderSpec(
            "vit_large_patch16_224", {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": True},
            description="UNI (ViT-L/16, 1024-d CLS); checkpoint: pytorch_model.bin from MahmoodLab/UNI",
        ),
        "phikon": EncoderSpec(
            "vit_base_patch16_224", {"img_size": 224, "norm_layer": None},
            key_mapper=hf_vit_to_timm,
            description="Phikon (ViT-B/16, 768-d CLS of last_hidden_state); checkpoint: HF owkin/phikon "
            "pytorch_model.bin/model.safetensors (keys mapped from transformers.ViTModel) or a timm-format dict",
        ),
        "gigapath": EncoderSpec(
            # Prov-GigaPath's HF config: vit_giant_patch14_dinov2 re-parameterised with 16 px patches.
            "vit_giant_patch14_dinov2",
            {"img_size": 224, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24,
             "init_values": 1e-5, "mlp_ratio": 5.33334},
            description="Prov-GigaPath patch encoder (ViT-g, 1536-d CLS); checkpoint: pytorch_model.bin from prov-gigapath",
        ),
        "lunit-vits16": EncoderSpec(
            "vit_small_patch16_224", {"img_size": 224}, mean=LUNIT_MEAN, std=LUNIT_STD,
            description="Lunit DINO ViT-S/16 (384-d CLS), Lunit mean/std; checkpoint: the released DINO .pth",
        ),
        "virchow": EncoderSpec(
            "vit_huge_patch14_224",
            {"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "dynamic_img_size": True, "swiglu": True},
            description="Virchow (ViT-H/14, SwiGLU MLP, SiLU; 1280-d CLS); checkpoint: pytorch_model.bin from paige-ai/Virchow",
        ),
    }


def _phikon_norm() -> dict[str, Any]:
    # HF ViT (Phikon) uses LayerNorm eps 1e-12, timm 1e-6: use the checkpoint's own eps.
    from functools import partial

    return {"norm_layer": partial(nn.LayerNorm, eps=1e-12)}


def _resolve_kwargs(spec: EncoderSpec) -> dict[str, Any]:
    kw = dict(spec.timm_kwargs)
    if kw.pop("swiglu", False):
        kw.update(_swiglu())
    if "norm_layer" in kw and kw["norm_layer"] is None:
        kw.update(_phikon_norm())
    return kw


ENCODERS: dict[str, EncoderSpec] = _presets()
ENCODERS["lunit"] = ENCODERS["lunit-vits16"]  # short alias


class Encoder(nn.Module):
    """A frozen image encoder and the preprocessing it expects.

    ``encoder(x)`` maps a float batch ``N×3×H×W`` (already resized and mean/std normalized)
    to ``N×embed_dim`` float32 features without gradients.
    """

    def __init__(
        self,
        name: str,
        model: nn.Module,
        *,
        spec: EncoderSpec,
        checkpoint: str | None,
        checkpoint_sha256: str | None,
        load_report: LoadReport | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        self.name = name
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.spec = spec
        self.embed_dim = embed_dim_of(model)
        self.mean = tuple(spec.mean)
        self.std = tuple(spec.std)
        self.input_size = spec.input_size
        self.resize_size = spec.resize_size
        self.checkpoint = checkpoint
        self.checkpoint_sha256 = checkpoint_sha256
        self.load_report = load_report
        self.device = torch.device(device)

    def identity(self) -> dict[str, Any]:
        """What produced features, for cache keys: name, architecture, weights hash, preprocessing."""
        return {
            "name": self.name,
            "arch": self.spec.describe(),
            "checkpoint_sha256": self.checkpoint_sha256,
            "embed_dim": self.embed_dim,
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": self.input_size,
            "resize_size": self.resize_size,
        }

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # N×3×H×W -> N×D
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.name}: expected a float batch N×3×H×W, got shape {tuple(x.shape)}")
        x = x.to(self.device, dtype=torch.float32, non_blocking=True)
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float()

    def train(self, mode: bool = True) -> "Encoder":
        # Frozen: never leave eval mode (dropout/drop-path would change features).
        return super().train(False)

    def __repr__(self) -> str:
        return f"Encoder(name={self.name!r}, embed_dim={self.embed_dim}, checkpoint={self.checkpoint!r})"


def _build(spec: EncoderSpec, device: str | torch.device, overrides: dict[str, Any]) -> nn.Module:
    kw = {**_resolve_kwargs(spec), **overrides}
    dev = torch.device(device)
    if dev.type == "meta":
        # Architecture only (no memory): for config checks of the giant presets.
        with torch.device("meta"):
            return build_backbone(spec.timm_name, **kw)
    return build_backbone(spec.timm_name, **kw)


def _finish(name: str, model: nn.Module, spec: EncoderSpec, device: Any, ckpt: str | None,
            sha: str | None, report: LoadReport | None) -> Encoder:
    if torch.device(device).type != "meta":
        model = model.to(device)
    return Encoder(name, model, spec=spec, checkpoint=ckpt, checkpoint_sha256=sha, load_report=report, device=device)


def _split_overrides(kw: dict[str, Any], spec: EncoderSpec) -> tuple[EncoderSpec, dict[str, Any]]:
    """Preprocessing keywords change the spec; everything else goes to timm."""
    pre = {k: kw.pop(k) for k in ("mean", "std", "input_size", "resize_size") if k in kw}
    if pre:
        spec = dataclasses.replace(spec, **{k: (tuple(v) if k in ("mean", "std") else v) for k, v in pre.items()})
    if kw:
        spec = dataclasses.replace(spec, timm_kwargs={**spec.timm_kwargs, **kw})
    if "img_size" in kw and "input_size" not in pre:
        spec = dataclasses.replace(spec, input_size=int(kw["img_size"]), resize_size=int(kw["img_size"]))
    return spec, {}


def _create_preset(name: str, checkpoint: str | None, device: Any, kw: dict[str, Any]) -> Encoder:
    spec, over = _split_overrides(kw, ENCODERS[name])
    if checkpoint is None:
        raise ValueError(
            f"encoder {name!r} needs its weights: create_encoder({name!r}, checkpoint='/path/to/weights'). "
            f"The kit never downloads. For a random-init model of the same architecture use 'random:{name}'."
        )
    if not Path(checkpoint).is_file():  # before building a possibly huge model
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}. Pass the path of a local weight file for "
                                f"{name!r}; the kit never downloads weights.")
    model = _build(spec, device if torch.device(device).type == "meta" else "cpu", over)
    report = load_weights_file(model, checkpoint, key_mapper=spec.key_mapper)
    return _finish(name, model, spec, device, str(checkpoint), sha256_file(checkpoint), report)


def _create_kit(name: str, checkpoint: str | None, device: Any, kw: dict[str, Any]) -> Encoder:
    if checkpoint is None:
        raise ValueError("encoder 'kit-dino' needs checkpoint=PATH of a checkpoint written by `exaonepath-lab train`")
    ckpt = load_kit_checkpoint(str(checkpoint))
    arch = ckpt.get("model") or {}
    if "timm_name" not in arch or "teacher_backbone" not in ckpt:
        raise ValueError(f"{checkpoint}: kit checkpoint lacks model.timm_name or teacher_backbone; was it written by pretrain?")
    tkw = dict(arch.get("timm_kwargs") or {})
    # Evaluate at the size the model was trained at, with the protocol's crop ratio 224/256.
    size = int(tkw.get("img_size", 224))
    spec = EncoderSpec(arch["timm_name"], tkw, input_size=size, resize_size=int(round(size * 256 / 224)),
                       description=f"our DINO teacher backbone from {checkpoint}")
    spec, over = _split_overrides(kw, spec)
    model = _build(spec, "cpu", over)
    report = LoadReport(source=str(checkpoint), n_tensors=0)
    sd = strip_prefixes(select_state_dict(ckpt["teacher_backbone"], report), report)
    report.n_tensors = len(sd)
    load_strict(model, sd, source=f"{checkpoint} [teacher_backbone]", report=report)
    return _finish(name, model, spec, device, str(checkpoint), sha256_file(checkpoint), report)


def _create_timm(name: str, rest: str, checkpoint: str | None, device: Any, kw: dict[str, Any]) -> Encoder:
    if checkpoint is None:
        raise ValueError(f"{name!r}: pass checkpoint=PATH (.safetensors/.pth/.bin); for random init use 'random:{rest}'")
    user_set = dict(kw)
    spec, over = _split_overrides(kw, EncoderSpec(rest, {}, description=f"timm {rest}"))
    model = _build(spec, "cpu", over)
    spec = _timm_spec(model, spec, user_set=user_set)
    report = load_weights_file(model, checkpoint)
    return _finish(name, model, spec, device, str(checkpoint), sha256_file(checkpoint), report)


def _timm_spec(model: nn.Module, spec: EncoderSpec, user_set: dict[str, Any]) -> EncoderSpec:
    """Use timm's pretrained_cfg mean/std/input size for plain timm models unless the user set them."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if not cfg or set(user_set) & {"mean", "std", "input_size", "resize_size", "img_size"}:
        return spec
    size = int((cfg.get("input_size") or (3, spec.input_size, spec.input_size))[-1])
    crop_pct = float(cfg.get("crop_pct", 0.875) or 0.875)
    return dataclasses.replace(
        spec, mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
        input_size=size, resize_size=int(round(size / crop_pct)),
    )


def _create_random(name: str, rest: str, checkpoint: str | None, device: Any, kw: dict[str, Any]) -> Encoder:
    if checkpoint is not None:
        raise ValueError(f"{name!r} is random init; drop checkpoint= (got {checkpoint})")
    seed = int(kw.pop("seed", 0))
    base = ENCODERS.get(rest) or EncoderSpec(rest, {}, description=f"timm {rest}")
    spec, over = _split_overrides(kw, base)
    if torch.device(device).type == "meta":
        return _finish(name, _build(spec, "meta", over), spec, device, None, None, None)
    # Seeded without touching the caller's global RNG state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(spec, "cpu", over)
    spec = dataclasses.replace(spec, description=f"random init (seed {seed}) of {spec.timm_name}")
    enc = _finish(name, model, spec, device, None, f"random-seed-{seed}", None)
    return enc


#: Name prefixes -> factory(name, rest, checkpoint, device, kwargs).
PREFIXES: dict[str, Callable[..., Encoder]] = {"timm": _create_timm, "random": _create_random}
#: Whole names handled by a factory(name, checkpoint, device, kwargs) (names in ENCODERS go through the preset path).
SPECIAL: dict[str, Callable[..., Encoder]] = {"kit-dino": _create_kit}
_SPECIAL_HELP: dict[str, str] = {"kit-dino": "checkpoint of our own DINO training (teacher backbone)"}


def register_encoder(
    name: str,
    spec: EncoderSpec | None = None,
    *,
    factory: Callable[..., Encoder] | None = None,
    overwrite: bool = False,
) -> Any:
    """Add an encoder to the registry without editing the kit (timm's ``register_model``).

    Either ``spec`` — architecture and preprocessing; weights then come from ``checkpoint=`` exactly as
    for the presets (strict loading, ``key_mapper``), and ``random:<name>`` works too — or
    ``factory(name, checkpoint, device, kwargs) -> Encoder`` for a model the spec path cannot build.
    Called with neither, it returns a decorator for a factory::

        register_encoder("my-vit", EncoderSpec("vit_small_patch16_224", {"img_size": 224}, description="..."))

        @register_encoder("my-model")
        def my_model(name, checkpoint, device, kwargs): ...

    Names are plain (no ``:``, which marks the ``timm:``/``random:`` prefixes); replacing an existing
    name needs ``overwrite=True``. Returns what was registered.
    """
    if spec is None and factory is None:
        return lambda fn: register_encoder(name, factory=fn, overwrite=overwrite)
    if (spec is None) == (factory is None):
        raise ValueError(f"register_encoder({name!r}): give either spec= or factory=, not both")
    if not isinstance(name, str) or not name or ":" in name:
        raise ValueError(f"register_encoder: name {name!r} must be a non-empty string without ':' "
                         f"(':' marks the prefixes {sorted(PREFIXES)})")
    if (name in ENCODERS or name in SPECIAL) and not overwrite:
        raise ValueError(f"encoder {name!r} is already registered; pass overwrite=True to replace it")
    ENCODERS.pop(name, None)
    SPECIAL.pop(name, None)
    _SPECIAL_HELP.pop(name, None)
    if spec is not None:
        if not isinstance(spec, EncoderSpec):
            raise TypeError(f"register_encoder({name!r}): spec must be an EncoderSpec, got {type(spec).__name__}")
        ENCODERS[name] = spec
        return spec
    if not callable(factory):
        raise TypeError(f"register_encoder({name!r}): factory must be callable, got {type(factory).__name__}")
    SPECIAL[name] = factory
    _SPECIAL_HELP[name] = ((factory.__doc__ or "").strip().splitlines() or ["user-registered factory"])[0]
    return factory


def list_encoders(filter: str | Sequence[str] = "") -> dict[str, str]:
    """Name -> one-line description, the prefix forms included.

    ``filter``: fnmatch pattern(s) as in timm's ``list_models``, e.g. ``"vit*"`` or ``["uni", "*path*"]``;
    empty lists everything.
    """
    out = {k: v.description for k, v in ENCODERS.items()}
    out.update(_SPECIAL_HELP)
    out["timm:<name>"] = "any timm model, weights from a local .safetensors/.pth/.bin"
    out["random:<preset|timm_name>"] = "seeded random init of the same architecture (tests, reference rows)"
    patterns = [filter] if isinstance(filter, str) else list(filter)
    patterns = [p for p in patterns if p]
    if not patterns:
        return out
    return {k: v for k, v in out.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}


def encoder_spec(name: str) -> EncoderSpec:
    """The :class:`EncoderSpec` of a preset (raises with the known names otherwise)."""
    if name not in ENCODERS:
        raise UnknownEncoderError(f"unknown encoder preset {name!r}; known: {sorted(ENCODERS)}")
    return ENCODERS[name]


def create_encoder(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu",
    **kw: Any,
) -> Encoder:
    """Build a frozen :class:`Encoder` by name; weights from ``checkpoint`` (a local path).

    Extra keywords: ``mean``, ``std``, ``input_size``, ``resize_size`` override the
    preprocessing; ``seed`` for ``random:``; anything else goes to ``timm.create_model``
    (e.g. ``img_size=64`` for small tiles). ``device="meta"`` builds the architecture only.
    """
    ckpt = str(checkpoint) if checkpoint is not None else None
    kw = dict(kw)
    if ":" in name:
        prefix, rest = name.split(":", 1)
        if prefix not in PREFIXES:
            raise UnknownEncoderError(f"unknown encoder prefix {prefix!r} in {name!r}; "
                                      f"known prefixes: {sorted(PREFIXES)}")
        return PREFIXES[prefix](name, rest, ckpt, device, kw)
    if name in SPECIAL:
        return SPECIAL[name](name, ckpt, device, kw)
    if name in ENCODERS:
        return _create_preset(name, ckpt, device, kw)
    raise UnknownEncoderError(f"unknown encoder {name!r}; known: {sorted(list_encoders())} (or add one with "
                              "exaonepath_lab.encoders.register_encoder)")


class UnknownEncoderError(KeyError, ValueError):
    """An encoder name the registry does not know. A ``KeyError`` (a registry lookup) and a ``ValueError``
    (bad user input), so the CLI reports it as one line with the fix instead of a traceback."""

    def __str__(self) -> str:  # KeyError's str() would quote the whole message
        return str(self.args[0]) if self.args else ""


def random_like(encoder: Encoder, seed: int = 0) -> Encoder:
    """A seeded random-init encoder with the same architecture and preprocessing as ``encoder``.

    The reference row of the collapse metrics: what an untrained network of the same shape
    does with the same input (clustering it shows comes from the input, not from training).
    """
    spec = dataclasses.replace(encoder.spec, key_mapper=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(spec, "cpu", {})
    spec = dataclasses.replace(spec, description=f"random init (seed {seed}) of {spec.timm_name}")
    return _finish(f"random-like:{encoder.name}", model, spec, encoder.device, None, f"random-seed-{seed}", None)
