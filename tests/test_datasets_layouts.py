"""Every dataset from every documented real layout: archives in the release's format, extracted with the
commands users and peer tools use (unzip, unzip -d, unzip -j, tar xzf keeping symlinks, gunzip), then
loaded: split sizes, class counts and no file counted twice. Also the one-ROOT resolution."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from exaonepath_lab.probing.check import check_all, check_dataset
from exaonepath_lab.probing.datasets import load_dataset, resolve_dataset_root

from fixtures_downstream import make_crc100k, make_mhist, make_msi, make_pcam, make_til


def _no_duplicates(ds) -> None:
    m = ds.meta
    assert not m["relpath"].duplicated().any()
    idx = m["index_in_file"].astype(str) if "index_in_file" in m.columns else ""
    real = m["path"].map(lambda p: str(Path(p).resolve())) + "#" + idx
    assert not real.duplicated().any()


def _counts(ds) -> dict:
    return {(s, c): int(n) for (s, c), n in ds.meta.groupby(["split", "class_name"]).size().items()}


@pytest.mark.parametrize("how", ["unzip", "unzip-d", "unzip-j"])
def test_mhist_layouts(tmp_path: Path, how: str) -> None:
    exp = make_mhist(tmp_path / "mhist", how=how)
    assert check_dataset("mhist", tmp_path, expected=exp).ok  # the root of datasets, resolved to mhist/
    ds = load_dataset("mhist", tmp_path)
    _no_duplicates(ds)
    assert ds.meta.split.value_counts().to_dict() == {"train": 10, "test": 5, "val": 2}
    assert set(ds.meta.relpath.str.split("/").str[0]) == {"images"}  # layout-independent keys


def test_mhist_unextracted_zip_names_the_command(tmp_path: Path) -> None:
    from fixtures_downstream import mhist_archives

    mhist_archives(tmp_path)
    with pytest.raises(ValueError, match=r"images.zip is not extracted: run `cd .* && unzip -q images.zip`"):
        load_dataset("mhist", tmp_path)


@pytest.mark.parametrize("how", ["unzip", "unzip-d"])
def test_crc100k_layouts(tmp_path: Path, how: str) -> None:
    exp = make_crc100k(tmp_path / "crc100k", n_train=2, n_test=1, how=how)
    assert check_dataset("crc100k", tmp_path / "crc100k", expected=exp).ok
    ds = load_dataset("crc100k", tmp_path)
    _no_duplicates(ds)
    assert ds.meta.split.value_counts().to_dict() == {"train": 14, "test": 9, "val": 4}  # round(18 * 0.2)
    assert (ds.meta.groupby("class_name").size() == 3).all()


def _til_expect(ds, n_studies: int) -> None:
    c = _counts(ds)
    for split, per in (("train", 3), ("val", 1), ("test", 2)):
        for cls in ("til-negative", "til-positive"):
            assert c[(split, cls)] == per * n_studies, (split, cls, c)
    assert not ds.meta.relpath.str.startswith("pancancer/").any()


@pytest.mark.parametrize("point_at", ["root", "TCGA-TILs", "images-tcga-tils", "pancancer"])
def test_til_tarball_every_entry_point_counts_each_tile_once(tmp_path: Path, point_at: str) -> None:
    exp = make_til(tmp_path / "til", cancers=("brca", "luad", "skcm"), how="tar")
    top = tmp_path / "til" / "TCGA-TILs"
    assert (top / "images-tcga-tils" / "pancancer").is_dir()
    links = [p for p in (top / "images-tcga-tils" / "pancancer").rglob("*.png")]
    assert links and all(p.is_symlink() for p in links)  # tar xzf kept them
    root = {"root": tmp_path, "TCGA-TILs": top, "images-tcga-tils": top / "images-tcga-tils",
            "pancancer": top / "images-tcga-tils" / "pancancer"}[point_at]
    ds = load_dataset("til", root)
    _no_duplicates(ds)
    _til_expect(ds, 3)
    assert len(ds) == exp["all"]["total"]
    rep = check_dataset("til", root, expected=exp)
    assert rep.ok, rep.to_text()
    if point_at != "pancancer":
        assert "metadata.csv" in rep.layout  # the metadata CSV is preferred


def test_til_without_metadata_csv_and_thunder_and_champkit(tmp_path: Path) -> None:
    make_til(tmp_path / "a", cancers=("brca", "luad"))
    (tmp_path / "a" / "TCGA-TILs" / "images-tcga-tils-metadata.csv").unlink()
    ds = load_dataset("til", tmp_path / "a")
    _no_duplicates(ds)
    _til_expect(ds, 2)
    make_til(tmp_path / "b", cancers=("brca", "luad"), how="thunder")  # symlinks deleted, pancancer/ tree empty
    ds = load_dataset("til", tmp_path / "b" / "TCGA-TILs")
    _til_expect(ds, 2)
    make_til(tmp_path / "c", cancers=("brca", "luad"), how="champkit")  # --strip-components=1
    assert (tmp_path / "c" / "images-tcga-tils-metadata.csv").is_file()
    for root in (tmp_path / "c", tmp_path / "c" / "images-tcga-tils" / "pancancer"):
        ds = load_dataset("til", root)
        _no_duplicates(ds)
        _til_expect(ds, 2)


def test_til_pancancer_copies_instead_of_links_are_not_double_counted(tmp_path: Path) -> None:
    make_til(tmp_path, cancers=("brca", "luad"))
    pan = tmp_path / "TCGA-TILs" / "images-tcga-tils" / "pancancer"
    copy = tmp_path / "pan_copy"
    shutil.copytree(pan, copy, symlinks=False)  # cp -rL: real files
    shutil.rmtree(pan)
    copy.rename(pan)
    (tmp_path / "TCGA-TILs" / "images-tcga-tils-metadata.csv").unlink()
    scan_ds = load_dataset("til", tmp_path)
    _til_expect(scan_ds, 2)


def test_til_pancancer_alone_with_broken_links_names_the_fix(tmp_path: Path) -> None:
    make_til(tmp_path, cancers=("brca",))
    pan = tmp_path / "TCGA-TILs" / "images-tcga-tils" / "pancancer"
    shutil.move(str(pan), str(tmp_path / "pancancer"))  # the links now point nowhere
    with pytest.raises(ValueError, match=r"broken symlinks.*tar xzf TCGA-TILs.tar.gz"):
        load_dataset("til", tmp_path / "pancancer")


@pytest.mark.parametrize("how", ["own-folder", "unzip-d", "unzip-j", "champkit"])
def test_msi_layouts(tmp_path: Path, how: str) -> None:
    exp = make_msi(tmp_path / "msi_crc", "CRC_DX", patients=(5, 2), tiles_per=2, how=how)
    rep = check_dataset("msi_crc", tmp_path, expected=exp)
    assert rep.ok, rep.to_text()
    ds = load_dataset("msi_crc", tmp_path)
    _no_duplicates(ds)
    m = ds.meta
    assert len(m[m.split == "test"]) == 8 and len(m[m.split != "test"]) == 20
    assert m[m.split == "test"].class_name.value_counts().to_dict() == {"MSS": 4, "MSIMUT": 4}
    tr, va = m[m.split == "train"], m[m.split == "val"]
    assert set(tr.patient).isdisjoint(va.patient) and va.patient.nunique() == 2
    assert m.relpath.str.match(r"CRC_DX_(TRAIN|TEST)_(MSS|MSIMUT)/blk-[A-Z]{12}-TCGA-..-....-01Z-00-DX1\.png$").all()


def test_msi_saved_split_survives_reextraction_in_another_layout(tmp_path: Path) -> None:
    make_msi(tmp_path / "a", "STAD", patients=(5, 2), tiles_per=2, how="unzip-j")
    first = load_dataset("msi_stad", tmp_path / "a").meta
    shutil.copytree(tmp_path / "a" / "splits", tmp_path / "b" / "splits")
    make_msi(tmp_path / "b", "STAD", patients=(5, 2), tiles_per=2, how="own-folder")
    again = load_dataset("msi_stad", tmp_path / "b").meta
    assert dict(zip(first.relpath, first.split)) == dict(zip(again.relpath, again.split))


def test_msi_merged_extraction_is_refused_with_a_command_that_keeps_splits_apart(tmp_path: Path) -> None:
    make_msi(tmp_path / "msi_crc", "CRC_DX", patients=(2, 1), tiles_per=1, how="merged")
    assert {p.name for p in (tmp_path / "msi_crc").iterdir()} == {"MSIMUT", "MSS"}
    with pytest.raises(ValueError) as e:
        load_dataset("msi_crc", tmp_path)
    msg = str(e.value)
    assert "merges TRAIN and TEST" in msg
    assert 'for z in CRC_DX_*.zip; do unzip -q -o "$z" -d "${z%.zip}"; done' in msg
    assert "unzip CRC_DX_TRAIN_MSS.zip`" not in msg  # the old hint that merged splits is gone


def test_msi_fix_command_really_gives_a_loadable_layout(tmp_path: Path) -> None:
    """The command the error prints, run as printed on the zips, gives a layout that loads."""
    import subprocess

    from exaonepath_lab.probing.scan import msi_fix_command
    from fixtures_downstream import msi_archives

    d = tmp_path / "Jane's data" / "msi_stad"  # pasted into a shell as printed: the path is quoted
    d.mkdir(parents=True)
    exp = msi_archives(d, "STAD", patients=(3, 1), tiles_per=1)
    with pytest.raises(ValueError, match="are there: run"):
        load_dataset("msi_stad", d)
    subprocess.run(["bash", "-c", msi_fix_command(d, "STAD")], check=True, capture_output=True)
    assert check_dataset("msi_stad", d, expected=exp).ok


def test_msi_crc_and_stad_share_a_folder(tmp_path: Path) -> None:
    make_msi(tmp_path / "msi", "CRC_DX", patients=(2, 1), tiles_per=1, how="own-folder")
    make_msi(tmp_path / "msi", "STAD", patients=(3, 1), tiles_per=1, how="unzip-d")
    assert len(load_dataset("msi_crc", tmp_path)) == 6 and len(load_dataset("msi_stad", tmp_path)) == 8
    assert resolve_dataset_root("msi_stad", tmp_path) == tmp_path / "msi"


@pytest.mark.parametrize("how", ["gunzip", "gunzip-k"])
def test_pcam_gunzipped_and_label_dtypes(tmp_path: Path, how: str) -> None:
    exp = make_pcam(tmp_path / "pcam", n={"train": 6, "valid": 4, "test": 4}, how=how, label_dtype=np.int64)
    assert check_dataset("pcam", tmp_path, expected=exp).ok
    ds = load_dataset("pcam", tmp_path)
    assert ds.meta.split.value_counts().to_dict() == {"train": 6, "val": 4, "test": 4}
    assert ds.meta.label.tolist()[:4] == [0, 1, 0, 1]


def test_pcam_bool_labels_and_still_gzipped(tmp_path: Path) -> None:
    make_pcam(tmp_path / "a", n={"train": 4, "valid": 2, "test": 2}, label_dtype=bool)
    assert load_dataset("pcam", tmp_path / "a").meta.label.sum() == 4
    make_pcam(tmp_path / "b", n={"train": 4, "valid": 2, "test": 2}, how="gz")
    with pytest.raises(ValueError, match=r"still gzipped\): run `gunzip -k .*camelyonpatch_level_2_split_train_x.h5.gz`"):
        load_dataset("pcam", tmp_path / "b")


def test_one_root_for_all_six(tmp_path: Path) -> None:
    make_pcam(tmp_path / "pcam", n={"train": 4, "valid": 2, "test": 2})
    make_mhist(tmp_path / "mhist", n_train=(2, 2), n_test=(1, 1))
    make_crc100k(tmp_path / "crc100k", n_train=1, n_test=1)
    make_til(tmp_path / "tcga_tils", cancers=("brca",))  # THUNDER's folder name
    make_msi(tmp_path / "msi_crc", "CRC_DX", patients=(2, 1), tiles_per=1)
    make_msi(tmp_path / "msi_stad", "STAD", patients=(2, 1), tiles_per=1, how="champkit")
    reports, absent = check_all(tmp_path)
    assert sorted(r.dataset for r in reports) == ["crc100k", "mhist", "msi_crc", "msi_stad", "pcam", "til"] and not absent
    for name, sub in [("pcam", "pcam"), ("til", "tcga_tils"), ("msi_stad", "msi_stad")]:
        assert resolve_dataset_root(name, tmp_path) == tmp_path / sub
        assert resolve_dataset_root(name, tmp_path / sub) == tmp_path / sub  # a dataset's own folder
    # a dataset's own folder given to check_all checks just that dataset
    own, _ = check_all(tmp_path / "mhist")
    assert [r.dataset for r in own] == ["mhist"]
    with pytest.raises(ValueError, match=r"dataset folder not found: .*crc100k"):
        shutil.rmtree(tmp_path / "crc100k")
        load_dataset("crc100k", tmp_path)


def test_til_dead_pancancer_links_beside_the_studies_are_ignored(tmp_path: Path) -> None:
    """If the release's links were absolute (dead after extraction elsewhere), the studies still load."""
    make_til(tmp_path, cancers=("brca", "luad"))
    img = tmp_path / "TCGA-TILs" / "images-tcga-tils"
    (tmp_path / "TCGA-TILs" / "images-tcga-tils-metadata.csv").unlink()
    for link in (img / "pancancer").rglob("*.png"):
        link.unlink()
        link.symlink_to(Path("/nonexistent/packager/machine") / link.name)
    ds = load_dataset("til", tmp_path)
    _til_expect(ds, 2)


def test_pcam_champkit_png_export(tmp_path: Path) -> None:
    """ChampKit gunzips the .h5.gz and saves every row as images/<split>/<tumor-negative|positive>/<row>.png."""
    import h5py
    from PIL import Image

    make_pcam(tmp_path / "h5", n={"train": 4, "valid": 2, "test": 2}, with_meta=False)
    h5_items = load_dataset("pcam", tmp_path / "h5").meta
    champ = tmp_path / "task1_tumor_notumor"
    for part, split in (("train", "train"), ("valid", "val"), ("test", "test")):
        with h5py.File(tmp_path / "h5" / f"camelyonpatch_level_2_split_{part}_x.h5") as fx, \
                h5py.File(tmp_path / "h5" / f"camelyonpatch_level_2_split_{part}_y.h5") as fy:
            for j, (x, y) in enumerate(zip(fx["x"][()], fy["y"][()].reshape(-1))):
                d = champ / "images" / split / ("tumor-positive" if y else "tumor-negative")
                d.mkdir(parents=True, exist_ok=True)
                Image.fromarray(x).save(d / f"{j:06d}.png")
    ds = load_dataset("pcam", champ)
    m = ds.meta.set_index("relpath").loc[h5_items.relpath]  # same keys as the H5 items
    assert (m.label.to_numpy() == h5_items.label.to_numpy()).all() and (m.split.to_numpy() == h5_items.split.to_numpy()).all()
    np.testing.assert_array_equal(ds[0]["image"], load_dataset("pcam", tmp_path / "h5")[int(
        np.flatnonzero(h5_items.relpath == ds.meta.relpath[0])[0])]["image"])
    assert check_dataset("pcam", champ, expected={"train": {"total": 4}, "val": {"total": 2}, "test": {"total": 2}},
                         decode=True).ok


def test_til_verify_checks_every_tile_against_the_metadata_md5(tmp_path: Path) -> None:
    exp = make_til(tmp_path, cancers=("brca",))
    assert check_dataset("til", tmp_path, expected=exp, checksums=True).ok
    f = sorted((tmp_path / "TCGA-TILs" / "images-tcga-tils" / "brca" / "val" / "til-positive").iterdir())[0]
    from PIL import Image

    Image.new("RGB", (100, 100), (1, 2, 3)).save(f)  # a valid image, but not the released one
    rep = check_dataset("til", tmp_path, expected=exp, checksums=True)
    assert any("1 tiles differ from the md5" in p and f.name in p for p in rep.problems)
    assert check_dataset("til", tmp_path, expected=exp).ok  # without --verify only the format is checked


def test_pcam_kaggle_competition_layout_is_named_not_loaded(tmp_path: Path) -> None:
    """Kaggle's 'Histopathologic Cancer Detection' zip (train/<id>.tif, train_labels.csv, test/, no test labels)
    is what many users have as "PCam": the error names it and the route to the real release."""
    import hashlib
    import subprocess

    from fixtures_downstream import _zip, encode, tile

    members, rows = {"sample_submission.csv": b"id,label\n"}, ["id,label"]
    for split in ("train", "test"):
        for i in range(3):
            name = hashlib.sha1(f"{split}{i}".encode()).hexdigest()  # noqa: S324 - Kaggle's ids are 40 hex digits
            members[f"{split}/{name}.tif"] = encode(tile(96, i % 2, i), "TIFF")
            rows += [f"{name},{i % 2}"] if split == "train" else []
    members["train_labels.csv"] = ("\n".join(rows) + "\n").encode()
    archive = _zip(tmp_path / "histopathologic-cancer-detection.zip", members)
    root = tmp_path / "downstream"
    (root / "pcam").mkdir(parents=True)
    subprocess.run(["unzip", "-q", str(archive), "-d", str(root / "pcam")], check=True)  # as users unzip it
    with pytest.raises(ValueError, match=r"Kaggle 'Histopathologic Cancer Detection' layout .*datasets fetch pcam "
                                         rf"--root {root}"):
        load_dataset("pcam", root)
    assert "Kaggle" in check_dataset("pcam", root).to_text()
