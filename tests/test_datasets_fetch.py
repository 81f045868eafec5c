"""`datasets fetch` end to end against an HTTP server on 127.0.0.1 (http.server in a thread, with Range
support) serving tiny archives in the real formats: PCam's .h5.gz, zips with the real top folders,
TCGA-TILs.tar.gz with the pancancer symlinks. Resumed downloads, corrupt archives, no network, MHIST's
manual route."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import shutil
import threading
from pathlib import Path

import pytest

from exaonepath_lab.cli import main
from exaonepath_lab.probing.check import check_dataset
from exaonepath_lab.probing.datasets import load_dataset
from exaonepath_lab.probing.fetch import COMPLETE

from fixtures_downstream import crc_archives, mhist_archives, msi_archives, pcam_archives, til_archive

REPO_MANIFESTS = Path(__file__).resolve().parents[1] / "data_manifests"


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-``; drops the connection halfway through the
    first full response of each file in ``server.drop_once``."""

    def log_message(self, *a) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        srv = self.server
        name = self.path.lstrip("/").split("?")[0]
        f = srv.root / name
        srv.requests.append((name, self.headers.get("Range")))
        if not f.is_file():
            self.send_error(404)
            return
        data = f.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if name in srv.drop_once and not rng:
            srv.drop_once.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)  # the connection dies mid-file
            return
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "srv"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.root, httpd.requests, httpd.drop_once = root, [], set()
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()  # noqa: S324


def _manifests(tmp_path: Path, srv, monkeypatch, *, base: str | None = None) -> Path:
    """The repository's manifests with URLs pointing at the test server and md5s of its tiny archives
    (md5s of files the server does not serve are kept: they are checked only if such a file appears)."""
    d = tmp_path / "manifests"
    shutil.copytree(REPO_MANIFESTS, d)
    base = base or f"http://127.0.0.1:{srv.server_address[1]}"
    for p in d.glob("*.json"):
        if p.name.endswith(".schema.json"):
            continue
        m = json.loads(p.read_text())
        for f in m.get("downloads", {}).get("files", []):
            a = srv.root / f["file"]
            if f["url"]:
                f["url"] = f"{base}/{f['file']}?download=1"
            if a.is_file():
                m["checksums"]["files"][f["file"]] = _md5(a)
        for name in m.get("checksums", {}).get("files", {}):
            gz = srv.root / (name + ".gz")
            if gz.is_file():  # PCam: the md5 of the gunzipped .h5 is recorded too
                m["checksums"]["files"][name] = hashlib.md5(gzip.decompress(gz.read_bytes())).hexdigest()  # noqa: S324
        p.write_text(json.dumps(m))
    monkeypatch.setenv("EXAONEPATH_LAB_MANIFESTS", str(d))
    return d


def test_fetch_every_public_dataset_with_a_dropped_connection(tmp_path: Path, server, monkeypatch, capsys) -> None:
    exp = {"pcam": pcam_archives(server.root, n={"train": 4, "valid": 2, "test": 2}),
           "crc100k": crc_archives(server.root, n_train=2, n_test=1),
           "til": til_archive(server.root, studies=("brca", "luad")),
           "msi_crc": msi_archives(server.root, "CRC_DX", patients=(3, 1), tiles_per=2)}
    _manifests(tmp_path, server, monkeypatch)
    server.drop_once |= {"TCGA-TILs.tar.gz", "CRC_DX_TRAIN_MSS.zip"}
    root = tmp_path / "downstream"
    for name in exp:
        assert main(["datasets", "fetch", name, "--root", str(root), "--quiet"]) == 0, capsys.readouterr().err
    # the dropped downloads were resumed with a Range request from where they stopped
    resumed = [(n, r) for n, r in server.requests if r]
    assert {n for n, _ in resumed} == {"TCGA-TILs.tar.gz", "CRC_DX_TRAIN_MSS.zip"}
    assert all(int(r[6:-1]) > 0 for _, r in resumed)
    # the layout the loaders read, with the pancancer symlinks kept
    assert (root / "crc100k" / "NCT-CRC-HE-100K-NONORM" / "ADI").is_dir()
    assert (root / "msi_crc" / "CRC_DX_TRAIN_MSS" / "MSS").is_dir()
    pan = list((root / "til" / "TCGA-TILs" / "images-tcga-tils" / "pancancer").rglob("*.png"))
    assert pan and all(p.is_symlink() and p.resolve().is_file() for p in pan)
    assert sorted(p.name for p in (root / "pcam").glob("*.h5")) == sorted(
        f"camelyonpatch_level_2_split_{s}_{k}.h5" for s in ("train", "valid", "test") for k in "xy")
    for name, e in exp.items():
        rep = check_dataset(name, root, expected=e, checksums=True)
        assert rep.ok, rep.to_text()
        assert len(load_dataset(name, root)) == sum(v["total"] for k, v in e.items() if k != "all")
        assert json.loads((root / name / COMPLETE).read_text())["complete"] is True
    # the README's check command on the same root: every fetched dataset ok
    assert main(["datasets", "check", str(root), "--verify", "--expect-total", "train=4"]) == 1  # other counts differ
    out = capsys.readouterr().out
    assert "[OK] pcam" in out and "[absent] mhist" in out
    # rerun: nothing downloaded again
    n = len(server.requests)
    assert main(["datasets", "fetch", "crc100k", "--root", str(root), "--quiet"]) == 0
    assert len(server.requests) == n and "already fetched" in capsys.readouterr().out


def test_resume_a_previous_runs_partial_download(tmp_path: Path, server, monkeypatch) -> None:
    crc_archives(server.root, n_train=1, n_test=1)
    _manifests(tmp_path, server, monkeypatch)
    root = tmp_path / "d"
    z = server.root / "NCT-CRC-HE-100K-NONORM.zip"
    part = root / "crc100k" / "downloads" / (z.name + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(z.read_bytes()[:1000])  # what an interrupted earlier run left
    assert main(["datasets", "fetch", "crc100k", "--root", str(root), "--quiet"]) == 0
    assert (z.name, "bytes=1000-") in server.requests
    assert _md5(root / "crc100k" / "downloads" / z.name) == _md5(z) and not part.exists()


def test_corrupt_archive_leaves_nothing_that_looks_complete(tmp_path: Path, server, monkeypatch, capsys) -> None:
    crc_archives(server.root, n_train=1, n_test=1)
    _manifests(tmp_path, server, monkeypatch)
    good = server.root / "CRC-VAL-HE-7K.zip"
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in transit
    good.write_bytes(bytes(data))
    root = tmp_path / "d"
    assert main(["datasets", "fetch", "crc100k", "--root", str(root), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "CRC-VAL-HE-7K.zip has md5" in err and "published md5 is" in err and "rerun to download it again" in err
    folder = root / "crc100k"
    assert not (folder / "CRC-VAL-HE-7K").exists() and not (folder / "downloads" / "CRC-VAL-HE-7K.zip").exists()
    assert not json.loads((folder / COMPLETE).read_text())["complete"]
    assert not list(folder.glob(".partial-*"))
    with pytest.raises(ValueError, match="CRC-VAL-HE-7K"):
        load_dataset("crc100k", root)


def test_corrupt_archive_without_published_md5_fails_at_unpack(tmp_path: Path, server, monkeypatch, capsys) -> None:
    msi_archives(server.root, "STAD", patients=(2, 1), tiles_per=1)
    d = _manifests(tmp_path, server, monkeypatch)
    m = json.loads((d / "msi_stad.json").read_text())
    m["checksums"]["files"]["STAD_TEST_MSS.zip"] = None  # as if none were published
    (d / "msi_stad.json").write_text(json.dumps(m))
    z = server.root / "STAD_TEST_MSS.zip"
    z.write_bytes(z.read_bytes()[: z.stat().st_size // 2])  # a truncated zip on the server
    root = tmp_path / "d"
    assert main(["datasets", "fetch", "msi_stad", "--root", str(root), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cannot unpack" in err and "STAD_TEST_MSS.zip" in err and "corrupt" in err
    folder = root / "msi_stad"
    assert not (folder / "STAD_TEST_MSS").exists() and not list(folder.glob(".partial-*"))
    assert (folder / "STAD_TRAIN_MSS" / "MSS").is_dir()  # finished archives stay; the dataset is incomplete:
    assert not json.loads((folder / COMPLETE).read_text())["complete"]
    with pytest.raises(ValueError, match="STAD_TEST_MSS"):
        load_dataset("msi_stad", root)
    rep = check_dataset("msi_stad", root)
    assert any("did not finish here; rerun it" in w for w in rep.warnings)


def test_no_network_fails_at_once_with_url_and_manual_route(tmp_path: Path, server, monkeypatch, capsys) -> None:
    til_archive(server.root, studies=("brca",))
    _manifests(tmp_path, server, monkeypatch, base="http://127.0.0.1:9")  # nothing listens on port 9
    assert main(["datasets", "fetch", "til", "--root", str(tmp_path / "d"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach http://127.0.0.1:9/TCGA-TILs.tar.gz" in err
    assert "manual route" in err and "TCGA-TILs.tar.gz into" in err and "datasets fetch til --root" in err


def test_mhist_manual_route_then_fetch_unpacks(tmp_path: Path, server, monkeypatch, capsys) -> None:
    exp = mhist_archives(server.root)  # what the e-mailed links give
    _manifests(tmp_path, server, monkeypatch)
    root = tmp_path / "d"
    assert main(["datasets", "fetch", "mhist", "--root", str(root), "--quiet"]) == 1
    assert "https://bmirds.github.io/MHIST" in capsys.readouterr().err
    (root / "mhist").mkdir(parents=True, exist_ok=True)  # fetch made it: the place to put the files
    for f in ("images.zip", "annotations.csv"):
        shutil.copy(server.root / f, root / "mhist" / f)
    assert main(["datasets", "fetch", "mhist", "--root", str(root), "--quiet"]) == 0
    assert (root / "mhist" / "images").is_dir() and not (root / "mhist" / "images" / "images").exists()
    rep = check_dataset("mhist", root, expected=exp, checksums=True)
    assert rep.ok, rep.to_text()


def test_manifests_list_downloads_with_published_md5s() -> None:
    import re

    for p in sorted(REPO_MANIFESTS.glob("*.json")):
        if p.name.endswith(".schema.json"):
            continue
        m = json.loads(p.read_text())
        files = m["downloads"]["files"]
        md5s = m["checksums"]["files"]
        assert files and all(f["unpack"] in ("gunzip", "zip", "zip_own_folder", "tar", "none") for f in files)
        for f in files:
            assert re.fullmatch(r"[0-9a-f]{32}", md5s[f["file"]]), (p.name, f["file"])  # every archive: published
            assert f["url"] is None or f["url"].startswith("https://zenodo.org/records/"), f["url"]
        assert (m["downloads"]["manual"] is not None) == any(f["url"] is None for f in files)
    msi = {**json.loads((REPO_MANIFESTS / "msi_crc.json").read_text())["checksums"]["files"],
           **json.loads((REPO_MANIFESTS / "msi_stad.json").read_text())["checksums"]["files"]}
    assert len(msi) == 8


def test_check_verify_catches_an_archive_changed_after_fetch(tmp_path: Path, server, monkeypatch) -> None:
    msi_archives(server.root, "CRC_DX", patients=(2, 1), tiles_per=1)
    _manifests(tmp_path, server, monkeypatch)
    root = tmp_path / "d"
    assert main(["datasets", "fetch", "msi_crc", "--root", str(root), "--quiet"]) == 0
    assert not check_dataset("msi_crc", root, checksums=True, expected={}).problems
    z = root / "msi_crc" / "downloads" / "CRC_DX_TEST_MSS.zip"
    z.write_bytes(z.read_bytes()[:-10])
    rep = check_dataset("msi_crc", root, checksums=True, expected={})
    assert any("CRC_DX_TEST_MSS.zip: md5" in p and "differs from the published" in p for p in rep.problems)


def test_a_wrong_archive_put_by_hand_is_named_not_deleted(tmp_path: Path, server, monkeypatch, capsys) -> None:
    mhist_archives(server.root)
    _manifests(tmp_path, server, monkeypatch)
    d = tmp_path / "d" / "mhist"
    d.mkdir(parents=True)
    shutil.copy(server.root / "annotations.csv", d)
    (d / "images.zip").write_bytes(b"PK not really")
    assert main(["datasets", "fetch", "mhist", "--root", str(tmp_path / "d"), "--quiet"]) == 1
    assert "images.zip has md5" in capsys.readouterr().err and (d / "images.zip").is_file()
    assert not (d / "images").exists()
