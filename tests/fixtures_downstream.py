"""Tiny downstream datasets built AS THEY ARE DISTRIBUTED, then extracted the way users extract them.

Each ``*_archives`` function writes the release's archives in their real formats and with their real
top folders (PCam's six ``.h5.gz``; MHIST's ``images.zip`` with ``images/`` + ``annotations.csv``;
CRC-100K's two zips with ``NCT-CRC-HE-100K-NONORM/`` and ``CRC-VAL-HE-7K/``; ``TCGA-TILs.tar.gz`` with
``TCGA-TILs/images-tcga-tils/<study>/...``, the ``pancancer/`` tree of relative symlinks and the metadata
CSV; the 8 MSI zips with ``MSIMUT/`` or ``MSS/`` on top). Each ``make_*`` builds them and extracts them
with the real binaries (``unzip``, ``tar xzf``, ``gunzip``) in one of the ways users and peer tools do
(``how=``), and returns the expected partition counts for ``check_dataset(expected=...)``.

Images are small smooth RGB tiles at the real sizes (PCam 96, TIL 100, others 224 px) whose colour
depends on the class, so a probe on raw pixels can learn something. ``break_*`` functions damage a
download the way real downloads break.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CLASS_COLORS = [(200, 120, 170), (120, 60, 140), (230, 190, 210), (90, 40, 120), (240, 230, 235),
                (170, 80, 150), (210, 150, 190), (140, 90, 160), (180, 60, 120)]


def tile(size: int, label: int, seed: int) -> np.ndarray:
    """uint8 (size, size, 3): class colour plus a smooth random pattern."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = np.array(CLASS_COLORS[label % len(CLASS_COLORS)], dtype=np.float64)
    wave = 20 * np.sin(2 * np.pi * (rng.uniform(1, 3) * xx + rng.uniform(1, 3) * yy))[..., None]
    img = base + wave  # smooth: small, fast PNGs
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(img: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


def _exp(per: dict[str, dict[str, int]]) -> dict[str, dict]:
    return {p: {"total": sum(c.values()), "per_class": c} for p, c in per.items()}


def sh(*cmd: str, cwd: Path | None = None) -> None:
    """Run a user's command (unzip, tar, gunzip) exactly as typed; fail loudly."""
    subprocess.run(list(cmd), cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    """A zip like the releases': directory entries for every folder, then the files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    dirs = sorted({str(Path(n).parent) + "/" for n in members if str(Path(n).parent) != "."})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for d in dirs:
            z.writestr(d, b"")
        for n, data in members.items():
            z.writestr(n, data)
    return path


def _scratch(root: Path) -> Path:
    """Where the archives are built: beside ``root``, not inside (the dataset folder holds only what
    extraction gives)."""
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".archives-{root.name}-", dir=root.parent))


# ---- MHIST: images.zip (top folder images/) + annotations.csv --------------------------------
def mhist_archives(dest: Path, n_train: tuple[int, int] = (8, 4), n_test: tuple[int, int] = (3, 2)) -> dict:
    rows = ["Image Name,Majority Vote Label,Number of Annotators who Selected SSA (Out of 7),Partition"]
    members, k = {}, 0
    for part, counts in (("train", n_train), ("test", n_test)):
        for label, cls in enumerate(("HP", "SSA")):
            for _ in range(counts[label]):
                name = f"MHIST_{k:04d}.png"
                members[f"images/{name}"] = encode(tile(224, label, k))
                rows.append(f"{name},{cls},{5 * label},{part}")
                k += 1
    _zip(dest / "images.zip", members)
    (dest / "annotations.csv").write_text("\n".join(rows) + "\n")
    return _exp({"trainval": {"HP": n_train[0], "SSA": n_train[1]}, "test": {"HP": n_test[0], "SSA": n_test[1]}})


def make_mhist(root: Path, n_train: tuple[int, int] = (8, 4), n_test: tuple[int, int] = (3, 2),
               how: str = "unzip") -> dict:
    """``how``: ``unzip`` (``unzip images.zip`` in the folder: images/), ``unzip-d`` (``unzip images.zip -d
    images``: images/images/), ``unzip-j`` (flat PNGs beside annotations.csv)."""
    root.mkdir(parents=True, exist_ok=True)
    exp = mhist_archives(root, n_train, n_test)
    opts, dest = {"unzip": ([], []), "unzip-d": ([], ["-d", "images"]), "unzip-j": (["-j"], [])}[how]
    sh("unzip", "-q", *opts, "images.zip", *dest, cwd=root)
    (root / "images.zip").unlink()
    return exp


# ---- CRC-100K: two zips with their top folders -----------------------------------------------
CRC = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")


def crc_archives(dest: Path, n_train: int = 5, n_test: int = 2) -> dict:
    k = 0
    for folder, n in (("NCT-CRC-HE-100K-NONORM", n_train), ("CRC-VAL-HE-7K", n_test)):
        members = {}
        for label, cls in enumerate(CRC):
            for _ in range(n):
                members[f"{folder}/{cls}/{cls}-{'TCGA' if n == n_test else 'AAAF'}{k:05d}.tif"] = encode(tile(224, label, k), "TIFF")
                k += 1
        _zip(dest / f"{folder}.zip", members)
    return _exp({"trainval": {c: n_train for c in CRC}, "test": {c: n_test for c in CRC}})


def make_crc100k(root: Path, n_train: int = 5, n_test: int = 2, how: str = "unzip") -> dict:
    """``how``: ``unzip`` (in the folder, eva's layout) or ``unzip-d`` (``unzip X.zip -d X``: nested)."""
    arch = _scratch(root)
    exp = crc_archives(arch, n_train, n_test)
    for z in ("NCT-CRC-HE-100K-NONORM", "CRC-VAL-HE-7K"):
        sh("unzip", "-q", str(arch / f"{z}.zip"), *(["-d", z] if how == "unzip-d" else []), cwd=root)
    shutil.rmtree(arch)
    return exp


# ---- TIL: TCGA-TILs.tar.gz with the pancancer symlink tree and the metadata CSV --------------
TIL_CLASSES = ("til-negative", "til-positive")
TIL_PER_SPLIT = {"train": 3, "val": 1, "test": 2}  # tiles per class per study, scaled by n


def til_tree(base: Path, studies: tuple[str, ...] = ("brca", "luad"), n: int = 1) -> dict:
    """``base/TCGA-TILs/...`` exactly as the tarball holds it; returns the expected counts."""
    top = base / "TCGA-TILs"
    img = top / "images-tcga-tils"
    rows = ["partition,study,barcode,label,path,md5"]
    k = 0
    for si, study in enumerate(studies):
        for part, m in TIL_PER_SPLIT.items():
            for label, cls in enumerate(TIL_CLASSES):
                for _ in range(m * n):
                    data = encode(tile(100, label, k))
                    md5 = hashlib.md5(data).hexdigest()  # noqa: S324
                    barcode = f"TCGA-{chr(65 + si)}{k % 10}-{1000 + k:04d}-01Z-00-DX1"
                    rel = Path(study, part, cls, f"{barcode}_{md5}.png")
                    f = img / rel
                    f.parent.mkdir(parents=True, exist_ok=True)
                    f.write_bytes(data)
                    link = img / "pancancer" / part / cls / f.name
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(Path("..", "..", "..", study, part, cls, f.name))
                    rows.append(f"{part},{study},{barcode},{cls},images-tcga-tils/{rel.as_posix()},{md5}")
                    k += 1
    (top / "images-tcga-tils-metadata.csv").write_text("\n".join(rows) + "\n")
    (top / "README.md").write_text("TCGA TIL patches, 100x100 px at 0.5 um/px\n")
    per = {p: {c: m * n * len(studies) for c in TIL_CLASSES} for p, m in TIL_PER_SPLIT.items()}
    return _exp({**per, "all": {c: sum(per[p][c] for p in per) for c in TIL_CLASSES}})


def til_archive(dest: Path, studies: tuple[str, ...] = ("brca", "luad"), n: int = 1) -> dict:
    with tempfile.TemporaryDirectory(dir=dest.parent) as t:
        exp = til_tree(Path(t), studies, n)
        with tarfile.open(dest / "TCGA-TILs.tar.gz", "w:gz") as tar:  # symlinks stored as links
            tar.add(Path(t) / "TCGA-TILs", arcname="TCGA-TILs")
    return exp


def make_til(root: Path, cancers: tuple[str, ...] = ("brca", "luad"), n: int = 1, how: str = "tar") -> dict:
    """``how``: ``tar`` (``tar xzf TCGA-TILs.tar.gz`` in the folder: TCGA-TILs/...), ``champkit``
    (``tar xzf ... --strip-components=1 --exclude=*/README.md``: images-tcga-tils/ + the CSV in the
    folder), ``thunder`` (``tar xzf`` then every symlink removed: an empty pancancer/ tree)."""
    arch = _scratch(root)
    exp = til_archive(arch, cancers, n)
    extra = ["--strip-components=1", "--exclude=*/README.md"] if how == "champkit" else []
    sh("tar", "xzf", str(arch / "TCGA-TILs.tar.gz"), *extra, cwd=root)
    if how == "thunder":
        sh("find", ".", "-type", "l", "-delete", cwd=root)
    shutil.rmtree(arch)
    return exp


# ---- MSI: 8 zips, top folder MSIMUT/ or MSS/ -------------------------------------------------
def _blk(rng: np.random.Generator) -> str:
    return "".join(chr(65 + int(i)) for i in rng.integers(0, 26, 12))


def msi_archives(dest: Path, prefix: str = "CRC_DX", patients: tuple[int, int] = (10, 4), tiles_per: int = 3) -> dict:
    """``patients`` per class in TRAIN and TEST; tiles ``blk-<12 letters>-TCGA-XX-XXXX-01Z-00-DX1.png``."""
    rng = np.random.default_rng(len(prefix))
    k, counts = 0, {}
    for part, n_pat in (("TRAIN", patients[0]), ("TEST", patients[1])):
        for label, cls in enumerate(("MSS", "MSIMUT")):
            members = {}
            for p in range(n_pat):
                barcode = f"TCGA-{'AB' if part == 'TRAIN' else 'CD'}-{label}{p:03d}"
                for _ in range(tiles_per):
                    members[f"{cls}/blk-{_blk(rng)}-{barcode}-01Z-00-DX1.png"] = encode(tile(224, label, k))
                    k += 1
            _zip(dest / f"{prefix}_{part}_{cls}.zip", members)
            counts.setdefault("trainval" if part == "TRAIN" else "test", {})[cls] = n_pat * tiles_per
    return _exp(counts)


def make_msi(root: Path, prefix: str = "CRC_DX", patients: tuple[int, int] = (10, 4), tiles_per: int = 3,
             how: str = "own-folder") -> dict:
    """``how``: ``own-folder`` (each zip into a folder of its name: ``CRC_DX_TRAIN_MSIMUT/MSIMUT/``),
    ``unzip-d`` (``unzip X.zip -d CRC_DX_TRAIN``: ``CRC_DX_TRAIN/MSIMUT/``), ``unzip-j`` (``unzip -j X.zip -d X``:
    flat), ``champkit`` (``unzip X.zip -d images/trainval``), ``merged`` (``unzip X.zip`` in the folder: the
    kit's old hint, which merges TRAIN and TEST)."""
    arch = _scratch(root)
    exp = msi_archives(arch, prefix, patients, tiles_per)
    if how == "champkit":  # ChampKit's setup.sh: mkdir -p images/trainval images/test, then unzip -d
        sh("mkdir", "-p", "images/trainval", "images/test", cwd=root)
    for z in sorted(arch.glob("*.zip")):
        part = z.stem.split("_")[-2]
        opts, dest = {"own-folder": ([], ["-d", z.stem]), "unzip-d": ([], ["-d", f"{prefix}_{part}"]),
                      "unzip-j": (["-j"], ["-d", z.stem]), "merged": ([], []),
                      "champkit": ([], ["-d", f"images/{'trainval' if part == 'TRAIN' else 'test'}"])}[how]
        sh("unzip", "-q", "-o", *opts, str(z), *dest, cwd=root)
    shutil.rmtree(arch)
    return exp


# ---- PCam: six .h5.gz files ------------------------------------------------------------------
def pcam_archives(dest: Path, n: dict[str, int] | None = None, with_meta: bool = True,
                  label_dtype: type = np.uint8) -> dict:
    import h5py
    import pandas as pd

    n = n or {"train": 16, "valid": 8, "test": 8}
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for part, m in n.items():
        y = np.arange(m) % 2
        x = np.stack([tile(96, int(l), 1000 * len(part) + i) for i, l in enumerate(y)])
        for kind, data in (("x", x), ("y", y.astype(label_dtype).reshape(-1, 1, 1, 1))):
            h5 = dest / f"camelyonpatch_level_2_split_{part}_{kind}.h5"
            with h5py.File(h5, "w") as h:
                h.create_dataset(kind, data=data, **({"chunks": (1, 96, 96, 3)} if kind == "x" else {}))
            with open(h5, "rb") as src, gzip.open(h5.with_name(h5.name + ".gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            h5.unlink()
        if with_meta:
            pd.DataFrame({"coord_y": 0, "coord_x": 0, "tumor_patch": y.astype(bool), "center_tumor_patch": y.astype(bool),
                          "wsi": [f"camelyon16_{part}_{i // 4:03d}" for i in range(m)]}).to_csv(
                dest / f"camelyonpatch_level_2_split_{part}_meta.csv", index=False)
        split = {"valid": "val"}.get(part, part)
        out[split] = {"total": m, "per_class": {"no_tumor": int((y == 0).sum()), "tumor": int((y == 1).sum())}}
    return out


def make_pcam(root: Path, n: dict[str, int] | None = None, with_meta: bool = True, how: str = "gunzip",
              label_dtype: type = np.uint8) -> dict:
    """``how``: ``gunzip`` (``gunzip *.h5.gz``, what the PCam README says), ``gunzip-k`` (archives kept),
    ``gz`` (still gzipped)."""
    exp = pcam_archives(root, n, with_meta, label_dtype)
    if how != "gz":
        gz = sorted(str(p.name) for p in root.glob("*.h5.gz"))
        sh("gunzip", *(["-k"] if how == "gunzip-k" else []), *gz, cwd=root)
    return exp


# ---- broken downloads ----------------------------------------------------------------------
def break_remove_class_folder(root: Path, rel: str) -> None:
    """Delete a class folder (an interrupted unzip)."""
    shutil.rmtree(root / rel)


def break_truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to ``keep`` of its bytes (an interrupted download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def break_garbage(path: Path) -> None:
    """Replace a file's content with bytes no decoder accepts."""
    path.write_bytes(b"this is not an image" * 10)
