"""Frozen job configs with a JSON round-trip, and where each job's config lives.

Every job defines one frozen dataclass that inherits :class:`JobConfig`, in the ``config.py`` of
the room that runs it, exported by that room's package (and lazily by ``exaonepath_lab``):

- tile: ``tiling.config.TileConfig``, saved as ``TILE_DIR/tile_config.json``
- normalize: ``stain.config.StainConfig``, saved as ``stain_config.json`` beside its outputs
- train: ``pretrain.config.PretrainConfig``, saved as ``config.json`` beside the checkpoints
- launch: ``pretrain.launch.config.LaunchConfig``, saved as ``launch_config.json`` beside the job files
- extract: ``features.config.ExtractConfig``, saved as ``FEATURES.h5.config.json``
- probe: ``probing.config.ProbeConfig``, saved as ``OUT/probe_config.json``
- demo: :class:`DemoConfig` below (the demo is a top-level module), saved as ``OUT/demo_config.json``

The resolved config is saved as JSON beside every artifact the job writes, so any figure or
checkpoint can be traced and re-run.
"""
from __future__ import annotations

import dataclasses
import json
import os
import textwrap
import typing
from pathlib import Path
from typing import Any, Sequence, TypeVar

from .io import write_json_atomic

T = TypeVar("T", bound="JobConfig")


@dataclasses.dataclass(frozen=True)
class JobConfig:
    """Base class: ``to_dict``/``from_dict``/``save``/``load`` and ``replace``."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, JobConfig):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Path):
                v = str(v)
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any]) -> T:
        """Build from a dict; unknown keys are an error that names them."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config keys {unknown}; known keys: {sorted(names)}")
        hints = typing.get_type_hints(cls)
        kw: dict[str, Any] = {}
        for k, v in d.items():
            hint = hints.get(k)
            if isinstance(hint, type) and issubclass(hint, JobConfig) and isinstance(v, dict):
                v = hint.from_dict(v)
            elif isinstance(v, list) and _is_tuple_hint(hint):
                v = tuple(v)
            kw[k] = v
        return cls(**kw)

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)

    @classmethod
    def describe_keys(cls) -> str:
        """Every field as ``name (type, default): help`` — the text of ``train --list-keys``.

        The help is the field's ``metadata["help"]`` (see :func:`option`); a field without one
        says so, so a missing reason is visible rather than silently absent.
        """
        hints = typing.get_type_hints(cls)
        lines = []
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                default = repr(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = repr(f.default_factory())
            else:
                default = "required"
            kind = getattr(hints.get(f.name), "__name__", None) or str(hints.get(f.name)).replace("typing.", "")
            lines.append(f"{f.name} ({kind}, default {default})")
            text = f.metadata.get("help", "(no help: add metadata={'help': ...} to this field)")
            lines.extend(textwrap.wrap(text, width=100, initial_indent="    ", subsequent_indent="    "))
        return "\n".join(lines)

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, {"_type": type(self).__name__, **self.to_dict()})

    @classmethod
    def load(cls: type[T], path: str | os.PathLike) -> T:
        d = json.loads(Path(path).read_text())
        d.pop("_type", None)
        return cls.from_dict(d)


def option(default: Any = dataclasses.MISSING, *, help: str, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that carries why its default was chosen (``metadata["help"]``, DINO-style)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"help": help})


def parse_key_values(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``["lr=1e-3", "global_crop_scale=[0.25,1]"]`` -> dict; values parsed as JSON when they can be, else strings.

    ``flag`` names the option in the error, e.g. ``--set`` or ``--encoder-kw``.
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE (VALUE parsed as JSON when it can be)")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def _is_tuple_hint(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return True
    if origin is typing.Union or str(origin) == "types.UnionType":
        return any(_is_tuple_hint(a) for a in typing.get_args(hint))
    return False


@dataclasses.dataclass(frozen=True)
class DemoConfig(JobConfig):
    """Sizes of the demo. Defaults: the full demo (~6-12 min on 2 cores, install excluded); ``smoke`` shrinks everything."""

    out_dir: str = "outputs"
    n_slides: int = 10  # paper's Figure 2 uses 10 WSIs
    seed: int = 0
    per_slide: int = 250  # patches per slide for Figure 2 (paper: 1,000; our slides hold ~150-400)
    train_iters: int | None = None  # None: the cpu-demo preset's own length
    probe_seeds: tuple[int, ...] = (0, 1, 2)
    probe_iterations: int = 12500  # the paper's linear-probe length
    n_boot: int = 200
    fetch_cmu: bool = True  # add OpenSlide's real CMU-1 small region (from PyPI) to Figure 3
    workers: int = 2
    smoke: bool = False  # tiny sizes for tests and notebooks

    def resolved(self) -> "DemoConfig":
        if not self.smoke:
            return self
        return self.replace(n_slides=min(self.n_slides, 4), per_slide=min(self.per_slide, 40),
                            train_iters=self.train_iters or 6, probe_seeds=(0,), probe_iterations=200,
                            n_boot=20, fetch_cmu=False)
