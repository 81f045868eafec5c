"""``exaonepath-lab datasets fetch NAME --root ROOT``: download the public archives of a downstream dataset
from the URLs in its manifest, check their md5, and unpack them into the layout the loader reads.

* Downloads go to ``ROOT/<name>/downloads/<file>.part`` and resume with an HTTP ``Range`` request, both
  after a dropped connection (retried) and in a later run; the finished file is renamed to ``<file>``.
  An archive already there (downloaded by hand, e.g. MHIST's form-gated files, or put in
  ``ROOT/<name>/`` itself) is verified and used instead.
* md5 from the manifest's ``checksums`` (published values only); a mismatch deletes the file and stops
  with the expected and found checksums. No published md5: the archive is used and the run says so.
* Unpacking happens in ``ROOT/<name>/.partial-<archive>/`` and is moved into place by renames only when
  complete, so an interrupted or failed extraction never leaves a dataset that looks complete. The
  record ``ROOT/<name>/.fetch-complete.json`` (archives, md5s, time) is written last.
* The first connection failing (no internet, proxy, DNS) stops at once with the URL and the manual
  route; nothing retries for minutes.

``--mirror BASE`` downloads ``BASE/<file>`` instead (an institutional mirror, or a test server).
"""
from __future__ import annotations

import datetime as _dt
import gzip
import http.client
import json
import os
import shutil
import socket
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any, Callable

from ..io import atomic_path, write_json_atomic
from .check import md5_file
from .datasets import dataset_spec
from .manifests import load_manifest
from .scan import FETCH_RECORD as COMPLETE
from .scan import PARTIAL_PREFIX

CHUNK = 1 << 20


class FetchError(RuntimeError):
    """A download or unpack step failed; the message names the file, the URL and the fix."""


def fetch_plan(name: str) -> dict[str, Any]:
    """The manifest's ``downloads`` with each file's published md5 (or None)."""
    m = load_manifest(name)
    d = m.get("downloads")
    if not d:
        raise FetchError(f"the manifest of {name} lists no downloads")
    md5s = m.get("checksums", {}).get("files", {})
    files = [{**f, "md5": md5s.get(f["file"])} for f in d["files"]]
    return {"files": files, "manual": d.get("manual"), "source": m.get("source", {})}


def _manual_route(name: str, folder: Path, f: dict, manual: str | None) -> str:
    where = f"{folder / 'downloads'}/ (or {folder}/)"
    how = manual or f"download {f.get('url')} on a machine with internet access"
    return (f"manual route: {how}; put {f['file']} into {where} and rerun `exaonepath-lab datasets fetch {name} "
            f"--root {folder.parent}` (it verifies the md5 and unpacks it)")


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    req = urllib.request.Request(url, headers={"User-Agent": "exaonepath-lab", **({"Range": f"bytes={start}-"} if start else {})})
    return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 - URLs come from the manifests


def download(url: str, dest: Path, *, retries: int = 5, timeout: float = 60.0,
             progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming with HTTP Range (a previous run's
    ``.part`` included); a dropped connection is retried ``retries`` times from where it stopped.
    Raises :class:`FetchError` at once when the first request cannot connect."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    attempt, connected_once = 0, False
    while True:
        start = part.stat().st_size if part.exists() else 0
        try:
            resp = _open(url, start, timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and start:  # nothing left to fetch: the .part is complete
                break
            raise FetchError(f"{url}: HTTP {e.code} {e.reason}") from e
        except (urllib.error.URLError, OSError) as e:
            if not connected_once:
                raise FetchError(f"cannot reach {url} ({getattr(e, 'reason', e)})") from e
            attempt += 1
            if attempt > retries:
                raise FetchError(f"{url}: connection lost {retries} times; rerun to resume from "
                                 f"{part.stat().st_size if part.exists() else 0} bytes") from e
            time.sleep(min(2 ** attempt, 10) * 0.1)
            continue
        connected_once = True
        with resp:
            if start and resp.status != 206:  # the server ignored Range: start over
                start = 0
            total = resp.headers.get("Content-Length")
            total = int(total) + start if total is not None else None
            mode = "ab" if start else "wb"
            got = start
            try:
                with open(part, mode) as out:
                    while True:
                        block = resp.read(CHUNK)
                        if not block:
                            break
                        out.write(block)
                        got += len(block)
                        if progress:
                            progress(got, total)
            except (http.client.IncompleteRead, ConnectionError, socket.timeout, OSError) as e:
                attempt += 1
                if attempt > retries:
                    raise FetchError(f"{url}: connection lost {retries} times; rerun to resume from {got} bytes") from e
                continue
            if total is not None and got < total:  # closed early without an exception
                attempt += 1
                if attempt > retries:
                    raise FetchError(f"{url}: got {got} of {total} bytes {retries} times; rerun to resume")
                continue
        break
    os.replace(part, dest)
    return dest


# ---- unpacking -----------------------------------------------------------------------------
def _tar_filter(dropped: list[str]) -> Callable[[tarfile.TarInfo, str], tarfile.TarInfo | None]:
    """tarfile's ``data`` filter, except that a link it refuses (pointing outside the archive) is
    skipped and counted instead of aborting the extraction (pancancer/ only holds links)."""
    def f(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        try:
            return tarfile.data_filter(member, path)
        except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
            dropped.append(member.name)
            return None
    return f


def _unpack(archive: Path, how: str, folder: Path, notes: list[str]) -> None:
    """Unpack ``archive`` into ``folder`` via ``folder/.partial-<archive>`` and renames."""
    tmp = folder / f"{PARTIAL_PREFIX}{archive.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if how == "gunzip":
            target = folder / archive.name[: -len(".gz")]
            with gzip.open(archive, "rb") as src, atomic_path(target) as out, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
            tmp.rmdir()
            return
        if how in ("zip", "zip_own_folder"):
            with zipfile.ZipFile(archive) as z:
                bad = z.testzip()
                if bad is not None:
                    raise FetchError(f"{archive}: member {bad} is corrupt")
                z.extractall(tmp)
        elif how == "tar":
            dropped: list[str] = []
            with tarfile.open(archive, "r:*") as t:
                t.extractall(tmp, filter=_tar_filter(dropped))
            if dropped:
                notes.append(f"{archive.name}: {len(dropped)} links pointing outside the archive were skipped "
                             f"(e.g. {dropped[0]})")
        elif how == "none":
            shutil.copy2(archive, tmp / archive.name)
        else:
            raise FetchError(f"unknown unpack mode {how!r} for {archive.name} in the manifest")
        if how == "zip_own_folder":  # CRC_DX_TRAIN_MSIMUT.zip -> CRC_DX_TRAIN_MSIMUT/MSIMUT/...
            target = folder / archive.name[: -len(".zip")]
            if target.exists():
                raise FetchError(f"{target} already exists but {COMPLETE} does not record {archive.name}; "
                                 f"move it away (or delete it) and rerun")
            os.replace(tmp, target)
            return
        entries = sorted(tmp.iterdir())
        clash = [e.name for e in entries if (folder / e.name).exists() and not (folder / e.name).samefile(archive)]
        if clash:
            raise FetchError(f"{archive.name} would overwrite {[str(folder / c) for c in clash]}, which "
                             f"{COMPLETE} does not record; move them away (or delete them) and rerun")
        for e in entries:
            if not (folder / e.name).exists():
                os.replace(e, folder / e.name)
        shutil.rmtree(tmp)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, gzip.BadGzipFile, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise FetchError(f"cannot unpack {archive} ({type(e).__name__}: {e}); the archive is corrupt: delete it "
                         "and rerun to download it again") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def fetch_dataset(
    name: str,
    root: str | Path,
    *,
    mirror: str | None = None,
    keep_archives: bool = True,
    timeout: float = 60.0,
    retries: int = 5,
    log: Callable[[str], None] = print,
    progress: bool = False,
) -> Path:
    """Download, verify and unpack dataset ``name`` into ``root/<name>``; returns that folder.

    Idempotent: a completed fetch (``.fetch-complete.json``) returns at once; an interrupted one
    resumes (downloads from their ``.part``, archives already unpacked are not unpacked again).
    """
    spec = dataset_spec(name)
    folder = Path(root) / spec.default_subdir
    done_file = folder / COMPLETE
    plan = fetch_plan(name)
    done: dict[str, Any] = {}
    if done_file.is_file():
        done = json.loads(done_file.read_text())
        if done.get("complete") and {f["file"] for f in plan["files"]} <= set(done.get("unpacked", {})):
            log(f"{name}: already fetched into {folder} ({done.get('finished')})")
            return folder
    folder.mkdir(parents=True, exist_ok=True)
    for p in folder.glob(PARTIAL_PREFIX + "*"):  # a killed run's half-extraction
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
    unpacked: dict[str, Any] = dict(done.get("unpacked", {}))
    notes: list[str] = []

    def record(complete: bool) -> None:
        write_json_atomic(done_file, {"dataset": name, "complete": complete, "unpacked": unpacked, "notes": notes,
                                      "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})

    for f in plan["files"]:
        fname = f["file"]
        if fname in unpacked:
            continue
        local = next((c for c in (folder / "downloads" / fname, folder / fname) if c.is_file()), None)
        if local is None:
            url = f"{mirror.rstrip('/')}/{fname}" if mirror else f.get("url")
            if not url:
                raise FetchError(f"{name}: {fname} is not downloadable by the kit; "
                                 + _manual_route(name, folder, f, plan["manual"]))
            log(f"{name}: downloading {url}")
            bar = _bar(fname) if progress else None
            try:
                local = download(url, folder / "downloads" / fname, retries=retries, timeout=timeout,
                                 progress=bar.update_to if bar else None)
            except FetchError as e:
                raise FetchError(f"{name}: {e}; " + _manual_route(name, folder, f, plan["manual"])) from e
            finally:
                if bar:
                    bar.close()
        if f["md5"]:
            got = md5_file(local)
            if got != f["md5"]:
                if local.parent.name == "downloads":  # ours: delete it so that a rerun downloads it again
                    local.unlink()
                    raise FetchError(f"{name}: {local} has md5 {got}, but the published md5 is {f['md5']}: the "
                                     "download is corrupt or the file changed upstream. It was deleted; rerun to "
                                     "download it again")
                raise FetchError(f"{name}: {local} has md5 {got}, but the published md5 is {f['md5']}: the file is "
                                 "corrupt or another version; replace it (or delete it so that fetch downloads it)")
            log(f"{name}: {fname} md5 ok")
        else:
            notes.append(f"{fname}: no published md5, not verified")
            log(f"{name}: {fname}: no published md5 to verify it against (see the manifest's checksums note)")
        _unpack(local, f.get("unpack", "none"), folder, notes)
        unpacked[fname] = {"md5": f["md5"] or md5_file(local), "unpack": f.get("unpack", "none")}
        if not keep_archives and local.parent.name == "downloads":
            local.unlink()
        record(False)
    record(True)
    log(f"{name}: fetched into {folder}; check it with `exaonepath-lab datasets check {Path(root)} --dataset {name}`")
    return folder


class _Bar:
    def __init__(self, desc: str) -> None:
        from tqdm.auto import tqdm

        self.t = tqdm(desc=desc, unit="B", unit_scale=True)

    def update_to(self, got: int, total: int | None) -> None:
        if total is not None:
            self.t.total = total
        self.t.n = got
        self.t.refresh()

    def close(self) -> None:
        self.t.close()


def _bar(desc: str) -> _Bar:
    return _Bar(desc)
