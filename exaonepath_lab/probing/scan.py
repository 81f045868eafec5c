"""Scanners: what a downloaded dataset folder holds, as an item table plus a list of problems.

One scanner per dataset, each accepting every layout the release is really found in (the archive as
distributed, extracted the ways users and peer tools extract it; ``data_manifests/README.md``
lists them). Loaders and the validator share them, so ``datasets check`` reports exactly what the
loader would refuse. A scanner never raises on a broken download; it lists each problem (naming the
layout it found and the exact command that fixes it) and returns the items it could find.

Item columns: ``relpath`` (unique, relative to the dataset and *independent of the layout*, so a
saved split survives re-extracting the archives another way), ``path`` (the real file: symlinks are
resolved and each file is counted once), ``label``, ``class_name``, ``partition`` (as distributed:
``train``/``val``/``test``, or ``trainval`` when the paper re-splits it), ``patient``, ``slide_id``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..datasets import IMAGE_SUFFIXES
from .splits import tcga_patient

COLUMNS = ["relpath", "path", "label", "class_name", "partition", "patient", "slide_id"]
#: Folders the kit itself writes into a dataset folder; never data.
KIT_DIRS = ("splits", "downloads")
PARTIAL_PREFIX = ".partial-"
FETCH_RECORD = ".fetch-complete.json"  # written last by `datasets fetch`


@dataclasses.dataclass
class Scan:
    """Items found under a dataset root, and what is wrong with the download."""

    items: pd.DataFrame
    problems: list[str] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)
    layout: str = ""  # the layout recognised, in words (reported by `datasets check`)


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (symlinks included), sorted by name (hidden files skipped)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
                  and (p.is_file() or p.is_symlink()))


def real(p: Path) -> Path:
    """``p`` with every symlink resolved (a broken link resolves to a path that does not exist)."""
    return Path(os.path.realpath(p))



def _cd(root: Path) -> str:
    """``cd ROOT`` for a fix command the user pastes into a shell (quoted: paths with spaces)."""
    return f"cd {shlex.quote(str(root))}"

def _row(relpath: str, path: Path, label: int, cls: str, partition: str, patient: str = "") -> dict:
    return {"relpath": relpath, "path": str(path), "label": label, "class_name": cls, "partition": partition,
            "patient": patient, "slide_id": patient}


def _frame(rows: list[dict]) -> pd.DataFrame:
    extra = [k for k in (rows[0] if rows else {}) if k not in COLUMNS]  # e.g. TIL's published per-tile md5
    df = pd.DataFrame(rows, columns=COLUMNS + extra)
    df["label"] = df["label"].astype(np.int64)
    return df.sort_values("relpath", kind="stable").reset_index(drop=True)


def _missing_root(root: Path, what: str) -> Scan | None:
    if not root.is_dir():
        return Scan(_frame([]), [f"dataset folder not found: {root} (expected {what}; "
                                 "data_manifests/README.md shows the tree)"])
    return None


def _partial_warnings(root: Path, scan: Scan) -> None:
    for p in sorted(root.glob(PARTIAL_PREFIX + "*")):
        scan.warnings.append(f"{p} is an interrupted extraction (ignored); rerun `exaonepath-lab datasets fetch` "
                             "or delete it")
    rec = root / FETCH_RECORD
    if rec.is_file():
        try:
            complete = json.loads(rec.read_text()).get("complete")
        except ValueError:
            complete = False
        if not complete:
            scan.warnings.append(f"{rec}: `datasets fetch` did not finish here; rerun it to complete the dataset")


def _dedupe(rows: list[dict], scan: Scan, what: str) -> list[dict]:
    """Each file once: drop rows whose real file was already listed (links) and rows whose ``relpath``
    repeats with another real file (a copied tree, two extractions); both are counted in a warning."""
    seen_path: dict[str, dict] = {}
    seen_rel: dict[str, dict] = {}
    out, dup_links, clash = [], 0, []
    for r in rows:
        rp = str(real(Path(r["path"])))
        if rp in seen_path:
            dup_links += 1
            continue
        if r["relpath"] in seen_rel:
            clash.append((seen_rel[r["relpath"]]["path"], r["path"]))
            continue
        r = {**r, "path": rp}
        seen_path[rp] = seen_rel[r["relpath"]] = r
        out.append(r)
    if dup_links:
        scan.warnings.append(f"{dup_links} {what} are links to files already counted; each file is counted once")
    if clash:
        scan.warnings.append(f"{len(clash)} {what} exist twice as separate copies (e.g. {clash[0][0]} and "
                             f"{clash[0][1]}); each is counted once. Delete the duplicate tree to save space.")
    return out


def _unextracted(root: Path, names: Iterable[str]) -> list[str]:
    return [n for n in names if (root / n).is_file() or (root / "downloads" / n).is_file()]


# ---- MHIST ---------------------------------------------------------------------------------
MHIST_CLASSES = ("HP", "SSA")


def scan_mhist(root: Path) -> Scan:
    """``annotations.csv`` + the images of ``images.zip`` (``Image Name``, ``Majority Vote Label``,
    ``Partition``). ``images.zip`` holds a top folder ``images/``: ``unzip images.zip`` in the dataset
    folder gives ``images/*.png``; ``unzip images.zip -d images`` gives ``images/images/*.png`` and
    ``unzip -j`` puts the PNGs beside ``annotations.csv``; all three load."""
    root = Path(root)
    if (s := _missing_root(root, "annotations.csv and images/")) is not None:
        return s
    scan = Scan(_frame([]))
    _partial_warnings(root, scan)
    ann = root / "annotations.csv"
    candidates = [root / "images", root / "images" / "images", root]
    img_dir = next((d for d in candidates if any(d.glob("MHIST_*.png")) or (d != root and list_images(d))), None)
    if not ann.is_file():
        scan.problems.append(f"missing {ann} (MHIST's label file; download it with images.zip through the form at "
                             "https://bmirds.github.io/MHIST/ and put both in this folder)")
    if img_dir is None:
        if (root / "images.zip").is_file():
            scan.problems.append(f"{root / 'images.zip'} is not extracted: run `{_cd(root)} && unzip -q images.zip` "
                                 "(it creates images/)")
        else:
            scan.problems.append(f"no MHIST images under {root} (expected images/MHIST_*.png): put images.zip "
                                 f"there and run `{_cd(root)} && unzip -q images.zip`")
    if scan.problems:
        return scan
    scan.layout = {root / "images": "annotations.csv + images/", root / "images" / "images":
                   "annotations.csv + images/images/ (unzip -d images)", root: "annotations.csv + flat PNGs (unzip -j)"}[img_dir]
    try:
        df = pd.read_csv(ann, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001 - any parse error is a broken file
        scan.problems.append(f"cannot read {ann}: {e}")
        return scan
    need = ["Image Name", "Majority Vote Label", "Partition"]
    if missing := [c for c in need if c not in df.columns]:
        scan.problems.append(f"{ann} lacks columns {missing} (has {list(df.columns)})")
        return scan
    bad_label = df[~df["Majority Vote Label"].isin(MHIST_CLASSES)]
    if len(bad_label):
        scan.problems.append(f"{ann}: {len(bad_label)} rows with a label not in {MHIST_CLASSES} "
                             f"(e.g. {bad_label['Majority Vote Label'].iloc[0]!r})")
    bad_part = df[~df["Partition"].str.lower().isin(["train", "test"])]
    if len(bad_part):
        scan.problems.append(f"{ann}: {len(bad_part)} rows with Partition not train/test")
    if df["Image Name"].duplicated().any():
        scan.problems.append(f"{ann}: {int(df['Image Name'].duplicated().sum())} image names listed twice")
    on_disk = {p.name for p in list_images(img_dir)}
    listed = set(df["Image Name"])
    if missing_files := sorted(listed - on_disk):
        scan.problems.append(f"{len(missing_files)} images listed in {ann.name} are missing from {img_dir} "
                             f"(e.g. {missing_files[:3]})")
    if unlisted := sorted(on_disk - listed):
        scan.warnings.append(f"{len(unlisted)} images in {img_dir} are not in {ann.name} and are ignored "
                             f"(e.g. {unlisted[:3]})")
    ok = df[df["Image Name"].isin(on_disk) & df["Majority Vote Label"].isin(MHIST_CLASSES)
            & df["Partition"].str.lower().isin(["train", "test"])].drop_duplicates("Image Name")
    rows = [_row(f"images/{r['Image Name']}", real(img_dir / r["Image Name"]),
                 MHIST_CLASSES.index(r["Majority Vote Label"]), r["Majority Vote Label"],
                 "trainval" if r["Partition"].lower() == "train" else "test") for _, r in ok.iterrows()]
    scan.items = _frame(rows)
    return scan


# ---- class-folder helper -------------------------------------------------------------------
def _class_rows(parent: Path, classes: Sequence[str], partition: str, scan: Scan, rel_prefix: str,
                patient_from_name: bool = False, fix: str = "", required: bool = True) -> list[dict]:
    """Rows of ``parent/<class>/*`` for each class; missing/empty class folders are problems."""
    rows: list[dict] = []
    for label, cls in enumerate(classes):
        d = parent / cls
        if not d.is_dir():
            if required:
                scan.problems.append(f"missing class folder {d} (class {cls!r}){fix}")
            continue
        files = list_images(d)
        if not files and required:
            scan.problems.append(f"class folder {d} holds no images")
        rows += [_row(f"{rel_prefix}/{cls}/{f.name}", f, label, cls, partition,
                      tcga_patient(f.name) if patient_from_name else "") for f in files]
    extra = sorted(p.name for p in parent.iterdir() if p.is_dir() and p.name not in classes
                   and not p.name.startswith(".")) if parent.is_dir() else []
    if extra:
        scan.warnings.append(f"{parent}: unexpected sub-folders {extra} ignored (classes are {list(classes)})")
    return rows


def _nested(root: Path, name: str) -> Path | None:
    """``root/name``, or ``root/name/name`` when the zip (top folder ``name/``) was extracted with
    ``unzip name.zip -d name``."""
    if (root / name / name).is_dir():
        return root / name / name
    return root / name if (root / name).is_dir() else None


# ---- CRC-100K ------------------------------------------------------------------------------
CRC_CLASSES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
CRC_TRAIN_DIR, CRC_TEST_DIR = "NCT-CRC-HE-100K-NONORM", "CRC-VAL-HE-7K"


def scan_crc100k(root: Path) -> Scan:
    """``NCT-CRC-HE-100K-NONORM/<CLASS>/*.tif`` (train+val) and ``CRC-VAL-HE-7K/<CLASS>/*.tif`` (test),
    as ``unzip`` of the two Zenodo zips gives them (also nested one level, from ``unzip X.zip -d X``)."""
    root = Path(root)
    if (s := _missing_root(root, f"{CRC_TRAIN_DIR}/ and {CRC_TEST_DIR}/")) is not None:
        return s
    scan = Scan(_frame([]))
    _partial_warnings(root, scan)
    rows: list[dict] = []
    for name, part in ((CRC_TRAIN_DIR, "trainval"), (CRC_TEST_DIR, "test")):
        d = _nested(root, name)
        if d is None:
            fix = ""
            if name == CRC_TRAIN_DIR and _nested(root, "NCT-CRC-HE-100K") is not None:
                fix = (f"; found NCT-CRC-HE-100K (the Macenko-normalized release) but the paper uses the "
                       f"non-normalized {CRC_TRAIN_DIR}.zip from doi:10.5281/zenodo.1214456")
            elif _unextracted(root, [f"{name}.zip"]):
                fix = f"; {name}.zip is there: run `{_cd(root)} && unzip -q {name}.zip` (it creates {name}/)"
            else:
                fix = (f" (download {name}.zip from doi:10.5281/zenodo.1214456 and run `{_cd(root)} && unzip -q "
                       f"{name}.zip`, or `exaonepath-lab datasets fetch crc100k --root {root.parent}`)")
            scan.problems.append(f"missing folder {root / name}{fix}")
            continue
        rows += _class_rows(d, CRC_CLASSES, part, scan, name)
    scan.layout = f"{CRC_TRAIN_DIR}/<CLASS>/ + {CRC_TEST_DIR}/<CLASS>/"
    scan.items = _frame(_dedupe(rows, scan, "tiles"))
    return scan


# ---- TIL detection -------------------------------------------------------------------------
TIL_CLASSES = ("til-negative", "til-positive")
TIL_SPLITS = ("train", "val", "test")
TIL_IMAGES, TIL_META, TIL_TOP = "images-tcga-tils", "images-tcga-tils-metadata.csv", "TCGA-TILs"
_TIL_PART = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test",
             "testing": "test"}
_TIL_LABEL = {"til-negative": 0, "til-positive": 1, "negative": 0, "positive": 1, "0": 0, "1": 1, "false": 0,
              "true": 1, "til_negative": 0, "til_positive": 1}


def _is_til_study(d: Path) -> bool:
    return d.is_dir() and any((d / s / c).is_dir() for s in TIL_SPLITS for c in TIL_CLASSES)


def til_images_dir(root: Path) -> tuple[Path | None, Path | None]:
    """(``images-tcga-tils`` folder or ``None``, the folder to scan when the root is a bare
    ``pancancer``/study tree) for any of the supported roots: the folder holding ``TCGA-TILs/``,
    ``TCGA-TILs/`` itself, ``images-tcga-tils/`` or a folder of the same shape, ``pancancer/``."""
    root = Path(root)
    for d in (root / TIL_TOP / TIL_IMAGES, root / TIL_IMAGES):
        if d.is_dir():
            return d, None
    if any(_is_til_study(p) for p in root.iterdir()):
        return root, None
    if any((root / s).is_dir() for s in TIL_SPLITS):  # pancancer/ (or one study) itself
        return None, root
    return None, None


def _til_meta_csv(images: Path | None, tree: Path | None) -> Path | None:
    starts = [images.parent] if images is not None else []
    if tree is not None:
        starts += [real(tree).parent.parent, real(tree).parent]
    return next((s / TIL_META for s in starts if (s / TIL_META).is_file()), None)


def _til_from_csv(csv: Path, images: Path, scan: Scan) -> list[dict] | None:
    """Items from the release's metadata CSV (columns partition, study, barcode, label, path, md5);
    ``None`` when the CSV cannot be used (then the folders are scanned)."""
    try:
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except Exception as e:  # noqa: BLE001
        scan.warnings.append(f"cannot read {csv} ({e}); scanning the folders instead")
        return None
    df.columns = [c.strip().lower() for c in df.columns]
    need = {"partition", "label", "path"}
    if not need <= set(df.columns):
        scan.warnings.append(f"{csv} lacks columns {sorted(need - set(df.columns))}; scanning the folders instead")
        return None
    bases = [csv.parent, images, images.parent]
    rows, missing, bad = [], [], 0
    for r in df.itertuples(index=False):
        part = _TIL_PART.get(str(r.partition).strip().lower())
        label = _TIL_LABEL.get(str(r.label).strip().lower())
        if part is None or label is None:
            bad += 1
            continue
        rel = Path(str(r.path).strip())
        f = next((b / rel for b in bases if (b / rel).exists()), None)
        if f is None:
            tail = rel.parts[rel.parts.index(TIL_IMAGES) + 1:] if TIL_IMAGES in rel.parts else rel.parts[-4:]
            cand = images.joinpath(*tail)
            f = cand if cand.exists() else None
        if f is None:
            missing.append(str(rel))
            continue
        study = str(getattr(r, "study", "") or "").strip()
        if study.lower() == "pancancer":
            continue  # the symlink tree; its files are the studies' files
        # listed files are the studies' own files: no symlink to resolve (cheap for 304,097 rows)
        relpath = "/".join(f.parts[-4:])  # <study>/<split>/<class>/<name>
        barcode = str(getattr(r, "barcode", "") or "")
        row = _row(relpath, f, label, TIL_CLASSES[label], part, tcga_patient(barcode) or tcga_patient(f.name))
        rows.append({**row, "md5": str(getattr(r, "md5", "") or "").strip().lower()})
    if bad:
        scan.problems.append(f"{csv}: {bad} rows with a partition not in train/val/test or a label not in "
                             f"{list(TIL_CLASSES)}")
    if missing:
        scan.problems.append(f"{len(missing)} tiles listed in {csv.name} are missing under {images} (e.g. "
                             f"{missing[:3]}); the archive was extracted only in part: extract TCGA-TILs.tar.gz again "
                             f"(`tar xzf TCGA-TILs.tar.gz`)")
    return rows


def _til_from_tree(tree: Path, scan: Scan, *, studies: bool) -> list[dict]:
    """Rows of ``<study>/{train,val,test}/{class}/*`` (``studies``) or ``{train,val,test}/{class}/*``."""
    rows: list[dict] = []
    dirs = sorted(p for p in tree.iterdir() if _is_til_study(p)) if studies else [tree]
    # real study folders first, so that a file reached through pancancer/ symlinks keeps its study's path
    dirs.sort(key=lambda p: (p.is_symlink() or p.name == "pancancer", p.name))
    broken, seen, seen_real, copies, links = [], set(), set(), 0, 0
    for d in dirs:
        for part in TIL_SPLITS:
            for label, cls in enumerate(TIL_CLASSES):
                for f in list_images(d / part / cls):
                    rf = real(f)
                    if not rf.exists():
                        broken.append(f)
                        continue
                    if str(rf) in seen_real:  # a pancancer/ symlink to a study's file
                        links += 1
                        continue
                    if (part, cls, f.name) in seen:  # pancancer/ as copies (cp -L, a file system without links)
                        copies += 1
                        continue
                    seen.add((part, cls, f.name))
                    seen_real.add(str(rf))
                    if studies:
                        rel = f"{d.name}/{part}/{cls}/{f.name}"
                    else:  # a bare pancancer/ or study tree: name each file by where its link points
                        tail = rf.parts[-4:]
                        rel = "/".join(tail) if tail[1] in TIL_SPLITS else f"{part}/{cls}/{f.name}"
                    rows.append(_row(rel, f, label, cls, part, tcga_patient(f.name)))
    if links:
        scan.warnings.append(f"{links} tiles under {tree} are symlinks to files already counted (pancancer/); "
                             "each file is counted once")
    if copies:
        scan.warnings.append(f"{copies} tiles appear twice under {tree} (pancancer/ and their study); counted once")
    in_pan = [b for b in broken if studies and "pancancer" in b.relative_to(tree).parts[:1]]
    if in_pan and len(dirs) > 1:  # the studies hold the files; pancancer/'s dead links change nothing
        scan.warnings.append(f"{len(in_pan)} pancancer/ links point nowhere (e.g. {in_pan[0]}); ignored, the study "
                             "folders hold the tiles")
        broken = [b for b in broken if b not in in_pan]
    if broken:
        scan.problems.append(f"{len(broken)} tiles are broken symlinks (e.g. {broken[0]}): the pancancer/ tree links "
                             "into the study folders, which are missing; extract the whole TCGA-TILs.tar.gz "
                             "(`tar xzf TCGA-TILs.tar.gz`) and point the kit at TCGA-TILs/ or its parent")
    return rows


def scan_til(root: Path) -> Scan:
    """TCGA-TILs as ``tar xzf TCGA-TILs.tar.gz`` gives it: ``TCGA-TILs/images-tcga-tils/<study>/{train,val,test}/
    {til-negative,til-positive}/<barcode>_<md5>.png``, a ``pancancer/`` study of symlinks to every other
    study's files, and ``TCGA-TILs/images-tcga-tils-metadata.csv``. ``root`` may be the folder holding
    ``TCGA-TILs/``, ``TCGA-TILs/``, ``images-tcga-tils/`` (ChampKit's ``--strip-components=1``) or
    ``pancancer/``. The metadata CSV is preferred when found; symlinks are resolved and every file is
    counted once (``pancancer/`` never doubles the data)."""
    root = Path(root)
    if (s := _missing_root(root, f"{TIL_TOP}/{TIL_IMAGES}/<study>/{{train,val,test}}/{{til-negative,til-positive}}/"))\
            is not None:
        return s
    scan = Scan(_frame([]))
    _partial_warnings(root, scan)
    images, tree = til_images_dir(root)
    if images is None and tree is None:
        fix = (f"`{_cd(root)} && tar xzf TCGA-TILs.tar.gz` (keeps the pancancer/ symlinks)"
               if _unextracted(root, ["TCGA-TILs.tar.gz"]) else
               f"download TCGA-TILs.tar.gz (doi:10.5281/zenodo.6604094), then `{_cd(root)} && tar xzf TCGA-TILs.tar.gz`, "
               f"or run `exaonepath-lab datasets fetch til --root {root.parent}`")
        scan.problems.append(f"no TIL tiles under {root} (expected {TIL_TOP}/{TIL_IMAGES}/<study>/{{train,val,test}}/"
                             f"{{til-negative,til-positive}}/); fix: {fix}")
        return scan
    csv = _til_meta_csv(images, tree)
    rows = None
    if csv is not None and images is not None:
        rows = _til_from_csv(csv, images, scan)
        scan.layout = f"{TIL_META} + {images.name}/<study>/<split>/<class>/"
    if rows is None:
        if images is not None:
            rows = _til_from_tree(images, scan, studies=True)
            scan.layout = f"{images.name}/<study>/<split>/<class>/ (no metadata CSV)"
            if not rows:
                scan.problems.append(f"no <study>/{{train,val,test}}/{{til-negative,til-positive}}/ tiles under {images}")
        else:
            rows = _til_from_tree(tree, scan, studies=False)
            scan.layout = f"{tree.name}/<split>/<class>/ (links resolved)"
    from_csv = scan.layout.startswith(TIL_META)
    if from_csv:
        df = _frame(rows)
        if (dup := df["relpath"].duplicated()).any():
            scan.problems.append(f"{csv}: {int(dup.sum())} tiles listed twice (e.g. {df['relpath'][dup].iloc[0]})")
        scan.items = df.drop_duplicates("relpath").reset_index(drop=True)
        on_disk = {f"{st.name}/{sp}/{c}/{e.name}" for st in images.iterdir() if st.name != "pancancer" and _is_til_study(st)
                   for sp in TIL_SPLITS for c in TIL_CLASSES if (st / sp / c).is_dir()
                   for e in os.scandir(st / sp / c) if Path(e.name).suffix.lower() in IMAGE_SUFFIXES}
        if extra := len(on_disk - set(scan.items["relpath"])):
            scan.warnings.append(f"{extra} tiles under {images} are not in {csv.name} and are ignored")
    else:
        scan.items = _frame(_dedupe(rows, scan, "tiles"))
    return scan


# ---- MSI (CRC, STAD) -----------------------------------------------------------------------
MSI_CLASSES = ("MSS", "MSIMUT")
MSI_ZENODO = "doi:10.5281/zenodo.2530835"


def msi_zip_names(prefix: str) -> list[str]:
    return [f"{prefix}_{part}_{cls}.zip" for part in ("TRAIN", "TEST") for cls in ("MSIMUT", "MSS")]


def msi_fix_command(root: Path, prefix: str) -> str:
    """Extraction that keeps TRAIN and TEST apart: each zip into a folder named like it."""
    return f'{_cd(root)} && for z in {prefix}_*.zip; do unzip -q -o "$z" -d "${{z%.zip}}"; done'


def _msi_candidates(root: Path, prefix: str, part: str, cls: str, own_folder: bool) -> list[tuple[Path, str]]:
    z = f"{prefix}_{part}_{cls}"
    c = [(root / z / cls, f"{z}/{cls}/ (each zip into a folder of its name)"),
         (root / z, f"{z}/*.png (unzip -j)"),
         (root / f"{prefix}_{part}" / cls, f"{prefix}_{part}/{cls}/ (unzip -d {prefix}_{part})")]
    if own_folder:  # ChampKit: unzip -d images/trainval and images/test
        champ = "trainval" if part == "TRAIN" else "test"
        c += [(root / "images" / champ / cls, f"images/{champ}/{cls}/ (ChampKit)"),
              (root / champ / cls, f"{champ}/{cls}/ (ChampKit)")]
    return c


def scan_msi(root: Path, prefix: str, *, own_folder: bool = True) -> Scan:
    """The 8 Zenodo zips (``{prefix}_{TRAIN,TEST}_{MSIMUT,MSS}.zip``, top folder ``MSIMUT/`` or ``MSS/``)
    in any extraction that keeps TRAIN and TEST apart: each zip into a folder of its own name
    (``CRC_DX_TRAIN_MSIMUT/MSIMUT/``), ``unzip -j`` (``CRC_DX_TRAIN_MSIMUT/*.png``), ``unzip -d CRC_DX_TRAIN``
    (``CRC_DX_TRAIN/MSIMUT/``), or ChampKit's ``{trainval,test}/{MSIMUT,MSS}/`` (only when ``root`` is this
    dataset's own folder, ``own_folder``). Each tile name must carry a TCGA patient barcode (the split
    is patient-level)."""
    root = Path(root)
    if (s := _missing_root(root, f"{prefix}_{{TRAIN,TEST}}_{{MSIMUT,MSS}}/")) is not None:
        return s
    scan = Scan(_frame([]))
    _partial_warnings(root, scan)
    merged = [root / c for c in MSI_CLASSES if list_images(root / c)]
    if merged:
        scan.problems.append(
            f"found {', '.join(str(m) for m in merged)} directly in {root}: that is what `unzip <zip>` run in this folder "
            f"gives, and it merges TRAIN and TEST tiles (and CRC with STAD) for good. Delete "
            f"{' and '.join(str(m) for m in merged)}, then extract each zip into a folder of its own name: "
            f"`{msi_fix_command(root, prefix)}`")
    for other in ("TRAIN", "TEST"):
        if (root / other).is_dir() and any((root / other / c).is_dir() for c in ("MSIH", "nonMSIH")):
            scan.problems.append(f"{root / other} holds MSIH/nonMSIH folders: that is the TCGA-CRC-DX release "
                                 f"(doi:10.5281/zenodo.3832231, 512 px), not the paper's MSI tiles ({MSI_ZENODO})")
    rows: list[dict] = []
    layouts: set[str] = set()
    missing: list[str] = []
    for part, partition in (("TRAIN", "trainval"), ("TEST", "test")):
        for label, cls in enumerate(MSI_CLASSES):
            found = False
            for d, desc in _msi_candidates(root, prefix, part, cls, own_folder):
                files = list_images(d)
                if not files:
                    continue
                found = True
                layouts.add(desc)
                rows += [_row(f"{prefix}_{part}_{cls}/{f.name}", f, label, cls, partition, tcga_patient(f.name))
                         for f in files]
            if not found:
                missing.append(f"{prefix}_{part}_{cls}")
    if missing:
        have = _unextracted(root, [m + ".zip" for m in missing])
        fix = (f"{', '.join(have)} {'is' if len(have) == 1 else 'are'} there: run `{msi_fix_command(root, prefix)}`"
               if have else f"download {', '.join(m + '.zip' for m in missing)} from {MSI_ZENODO} into {root} and run "
               f"`{msi_fix_command(root, prefix)}`, or `exaonepath-lab datasets fetch "
               f"{'msi_crc' if prefix == 'CRC_DX' else 'msi_stad'} --root {root.parent}`")
        for m in missing:
            scan.problems.append(f"missing folder {root / m} (the tiles of {m}.zip; none found in any supported "
                                 f"layout); fix: {fix}")
    scan.layout = "; ".join(sorted(layouts))
    df = _frame(_dedupe(rows, scan, "tiles"))
    no_patient = df[df["patient"] == ""]
    if len(no_patient):
        scan.problems.append(
            f"{len(no_patient)} tiles have no TCGA patient barcode (regex TCGA-XX-XXXX) in their name, "
            f"e.g. {no_patient['relpath'].iloc[0]}; the MSI split is patient-level, so every tile needs one. "
            "Restore the original file names."
        )
    if len(df):
        name = df["relpath"].str.rsplit("/", n=1).str[-1]
        dup = df[name.duplicated(keep=False)]
        if len(dup):
            scan.problems.append(f"{len(dup)} tiles appear under two partitions or classes (e.g. {dup['path'].tolist()[:2]}); "
                                 f"a folder mixes zips: re-extract with `{msi_fix_command(root, prefix)}`")
        both = df.groupby("patient")["partition"].nunique()
        if (leak := both[both > 1]).size and leak.index[0] != "":
            scan.warnings.append(f"{len(leak)} patients appear in both TRAIN and TEST (e.g. {leak.index[0]})")
    scan.items = df
    return scan


def scan_msi_crc(root: Path) -> Scan:
    return scan_msi(root, "CRC_DX", own_folder=not any(Path(root).glob("STAD_*")))


def scan_msi_stad(root: Path) -> Scan:
    return scan_msi(root, "STAD", own_folder=not any(Path(root).glob("CRC_DX_*")))
