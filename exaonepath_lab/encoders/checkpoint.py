"""Reading weight files and loading them strictly into a backbone.

The EXAONEPath reference loader calls ``load_state_dict(strict=False)``, which hides
every mismatch (a wrong file silently gives a half-random model). Here every load is
strict: all missing, unexpected and shape-mismatched keys are collected and raised
together in one :class:`CheckpointMismatchError` that names the file (PROTOCOL §6).

Accepted files: ``.safetensors`` (read with safetensors), ``.pth``/``.pt``/``.bin``/
``.ckpt`` (``torch.load(weights_only=True)`` first, so a pickle cannot run code; a
full-pickle fallback only for our own kit checkpoints, see ``models.load_kit_checkpoint``).
"""
from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

#: Containers that released checkpoints wrap their weights in, tried in this order.
#: (DINO's own checkpoints keep ``teacher``/``student``; EXAONEPath's release keeps ``state_dict``.)
WRAPPER_KEYS = ("state_dict", "model", "teacher", "module", "student")

#: Prefixes stripped from every key when *all* keys of the (selected) dict carry them.
STRIP_PREFIXES = ("module.", "backbone.", "model.", "encoder.")


SHOWN_KEYS = 8
"""Key problems of each kind named in the error (the count says how many there are in all): a ViT-B
checkpoint given to a ViT-S preset mismatches every tensor, and 150 names would bury the fix."""


class CheckpointMismatchError(ValueError):
    """Raised when a state dict does not match the model exactly; counts every key problem and names
    the first :data:`SHOWN_KEYS` of each kind."""


@dataclasses.dataclass
class LoadReport:
    """What loading did: the file, prefixes stripped, keys deliberately ignored, notes."""

    source: str
    n_tensors: int
    stripped_prefixes: list[str] = dataclasses.field(default_factory=list)
    ignored_keys: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def read_weight_file(path: str | Path) -> dict[str, object]:
    """Read a weight file into a (possibly nested) dict; errors name the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}. Pass the path of a local weight file; "
                                "the kit never downloads weights.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as e:
            raise ValueError(f"cannot read safetensors file {path}: {e}. Is the download complete?") from e
    import argparse

    try:
        # DINO's checkpoints carry an argparse.Namespace ("args"): allow that one plain class, nothing else.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"cannot read {path} as a weights-only torch file ({type(e).__name__}: {str(e)[:200]}). "
            "Re-save it with torch.save(model.state_dict(), path) or convert it to .safetensors; "
            "checkpoints of our own DINO training load with encoder 'kit-dino'."
        ) from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a dict of tensors; save model.state_dict() instead.")
    return dict(obj)


def select_state_dict(obj: Mapping[str, object], report: LoadReport) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}``-style containers until a flat tensor dict remains."""
    cur: Mapping[str, object] = obj
    for _ in range(3):  # wrappers nest at most a couple of levels in practice
        if cur and all(isinstance(v, torch.Tensor) for v in cur.values()):
            break
        for k in WRAPPER_KEYS:
            if isinstance(cur.get(k), Mapping):
                report.notes.append(f"using the {k!r} entry of the checkpoint")
                cur = cur[k]  # type: ignore[assignment]
                break
        else:
            break
    tensors = {k: v for k, v in cur.items() if isinstance(v, torch.Tensor)}
    others = sorted(k for k in cur if k not in tensors)
    if not tensors:
        raise ValueError(f"{report.source}: no tensors found (top-level keys: {sorted(obj)[:20]}); "
                         f"expected a state dict or one wrapped in one of {WRAPPER_KEYS}")
    if others:
        report.notes.append(f"ignored non-tensor entries {others[:10]}")
    return tensors


def strip_prefixes(sd: dict[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """Strip ``module.``/``backbone.``/... prefixes, noting each.

    A DINO training checkpoint holds ``backbone.*`` and ``head.*``: when some keys start with
    ``backbone.`` only those are kept (the projection head is not part of the encoder) and the
    dropped keys are listed in ``report.ignored_keys``, never silently.
    """
    changed = True
    while changed:
        changed = False
        for p in STRIP_PREFIXES:
            keys = list(sd)
            if all(k.startswith(p) for k in keys):
                sd = {k[len(p):]: v for k, v in sd.items()}
                report.stripped_prefixes.append(p)
                changed = True
            elif p == "backbone." and any(k.startswith(p) for k in keys):
                dropped = sorted(k for k in keys if not k.startswith(p))
                report.ignored_keys.extend(dropped)
                report.notes.append(f"kept the {p!r} sub-dict; ignored {len(dropped)} other keys (e.g. DINO head)")
                sd = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
                report.stripped_prefixes.append(p)
                changed = True
    return sd


def load_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
    report: LoadReport | None = None,
) -> LoadReport:
    """Load ``state_dict`` into ``model`` requiring an exact match of keys and shapes.

    Raises :class:`CheckpointMismatchError` listing *all* missing, unexpected and
    shape-mismatched keys at once (so one run shows everything that is wrong).
    """
    report = report or LoadReport(source=source, n_tensors=len(state_dict))
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        lines = [f"checkpoint {source} does not match {type(model).__name__} "
                 f"({len(own)} model tensors, {len(state_dict)} in checkpoint):"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
            if items:
                more = f", ... and {len(items) - SHOWN_KEYS} more" if len(items) > SHOWN_KEYS else ""
                lines.append(f"  {title} ({len(items)}): " + ", ".join(items[:SHOWN_KEYS]) + more)
        if report.stripped_prefixes:
            lines.append(f"  (prefixes stripped before matching: {report.stripped_prefixes})")
        lines.append("  Fix: pick the encoder preset that matches this file (exaonepath_lab.encoders.list_encoders()), "
                     "or pass the architecture kwargs the weights were trained with.")
        raise CheckpointMismatchError("\n".join(lines))
    model.load_state_dict(dict(state_dict), strict=True)
    # Unwrapping a container is routine (notes only); changing key names or ignoring keys is worth a warning.
    if report.stripped_prefixes or report.ignored_keys:
        warnings.warn(f"{source}: stripped prefixes {report.stripped_prefixes}; ignored {len(report.ignored_keys)} "
                      f"keys {report.ignored_keys[:5]}{' ...' if len(report.ignored_keys) > 5 else ''}", stacklevel=3)
    return report


def load_weights_file(
    model: nn.Module,
    path: str | Path,
    *,
    key_mapper: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
) -> LoadReport:
    """Read ``path``, unwrap, strip prefixes, optionally remap keys, load strictly."""
    obj = read_weight_file(path)
    report = LoadReport(source=str(path), n_tensors=0)
    sd = strip_prefixes(select_state_dict(obj, report), report)
    if key_mapper is not None:
        sd = key_mapper(sd)
        report.notes.append(f"keys mapped with {getattr(key_mapper, '__name__', 'key_mapper')}")
    report.n_tensors = len(sd)
    return load_strict(model, sd, source=str(path), report=report)


# --- key mapping for Hugging Face ViT checkpoints (Phikon) -----------------------------------

_HF_LAYER = re.compile(r"^(?:vit\.)?encoder\.layer\.(\d+)\.(.+)$")
_HF_BLOCK_MAP = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


def hf_vit_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a ``transformers.ViTModel`` state dict (e.g. owkin/phikon) to timm ViT key names.

    ``query``/``key``/``value`` are concatenated into timm's fused ``qkv`` (q, k, v order, as
    timm splits them). The HF pooler (``pooler.dense.*``) is dropped because Phikon's
    embedding is the CLS token of ``last_hidden_state`` (after the final layernorm), which is
    timm's ``global_pool='token'`` output. Already-timm dicts pass through unchanged.
    """
    if "cls_token" in sd and any(k.startswith("blocks.") for k in sd):
        return sd
    out: dict[str, torch.Tensor] = {}
    qkv: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
    for k, v in sd.items():
        k2 = k[len("vit."):] if k.startswith("vit.") else k
        if k2.startswith("pooler."):
            continue
        m = _HF_LAYER.match(k2)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            mq = re.match(r"attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
            if mq:
                qkv.setdefault(i, {}).setdefault(mq.group(2), {})[mq.group(1)] = v
                continue
            for hf, tm in _HF_BLOCK_MAP.items():
                if rest.startswith(hf + "."):
                    out[f"blocks.{i}.{tm}.{rest[len(hf) + 1:]}"] = v
                    break
            else:
                out[k2] = v  # unknown: left for the strict check to report
            continue
        simple = {
            "embeddings.cls_token": "cls_token",
            "embeddings.position_embeddings": "pos_embed",
            "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
            "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
            "layernorm.weight": "norm.weight",
            "layernorm.bias": "norm.bias",
        }
        out[simple.get(k2, k2)] = v
    for i, parts in qkv.items():
        for kind, d in parts.items():
            if set(d) != {"query", "key", "value"}:
                raise CheckpointMismatchError(f"block {i}: incomplete attention {kind} (have {sorted(d)})")
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([d["query"], d["key"], d["value"]], dim=0)
    return out


def timm_vit_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`hf_vit_to_timm` (used to fabricate HF-style files in tests and docs)."""
    inv_simple = {
        "cls_token": "embeddings.cls_token",
        "pos_embed": "embeddings.position_embeddings",
        "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight",
        "norm.bias": "layernorm.bias",
    }
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = re.match(r"^blocks\.(\d+)\.(.+)$", k)
        if not m:
            out[inv_simple.get(k, k)] = v
            continue
        i, rest = m.group(1), m.group(2)
        if rest.startswith("attn.qkv."):
            kind = rest.rsplit(".", 1)[1]
            q, kk, vv = v.chunk(3, dim=0)
            for nm, t in (("query", q), ("key", kk), ("value", vv)):
                out[f"encoder.layer.{i}.attention.attention.{nm}.{kind}"] = t.clone()
            continue
        for hf, tm in _HF_BLOCK_MAP.items():
            if rest.startswith(tm + "."):
                out[f"encoder.layer.{i}.{hf}.{rest[len(tm) + 1:]}"] = v
                break
    return out
