"""Frozen job configs with a JSON round-trip.

Each job (tile, stain, pretrain, extract, probe) defines one frozen dataclass that
inherits :class:`JobConfig`. The resolved config is saved as JSON beside every
artifact the job writes, so any figure or checkpoint can be traced and re-run.
"""
from __future__ import annotations

import dataclasses
import json
import os
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

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, {"_type": type(self).__name__, **self.to_dict()})

    @classmethod
    def load(cls: type[T], path: str | os.PathLike) -> T:
        d = json.loads(Path(path).read_text())
        d.pop("_type", None)
        return cls.from_dict(d)


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
