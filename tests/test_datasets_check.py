"""`datasets check` on good fixtures and on deliberately broken downloads."""
from __future__ import annotations

from pathlib import Path

from exaonepath_lab.cli import main
from exaonepath_lab.probing.check import check_all, check_dataset

from fixtures_downstream import (break_garbage, break_remove_class_folder, break_truncate, make_crc100k, make_mhist,
                                 make_msi, make_pcam, make_til)


def test_good_fixtures_pass_with_expected_overrides(tmp_path: Path) -> None:
    for name, make in [("mhist", make_mhist), ("crc100k", make_crc100k), ("til", make_til), ("pcam", make_pcam)]:
        exp = make(tmp_path / name)
        rep = check_dataset(name, tmp_path / name, expected=exp, decode=True)
        assert rep.ok, rep.to_text()
        assert rep.n_items == sum(v["total"] for k, v in exp.items() if k != "all")
    exp = make_msi(tmp_path / "msi", "CRC_DX")
    assert check_dataset("msi_crc", tmp_path / "msi", expected=exp).ok


def test_fixture_against_paper_counts_reports_each_mismatch(tmp_path: Path) -> None:
    make_mhist(tmp_path)
    rep = check_dataset("mhist", tmp_path)  # the manifest's real counts: 2,175 / 977
    assert not rep.ok
    assert "partition trainval: found 12 images, expected 2175" in rep.problems
    assert "partition test: found 3 images of class HP, expected 617" in rep.problems
    row = rep.counts[(rep.counts.partition == "trainval") & (rep.counts.class_name == "SSA")].iloc[0]
    assert (row.found, row.expected) == (4, 630)


def test_missing_class_folder(tmp_path: Path) -> None:
    exp = make_crc100k(tmp_path, n_train=2, n_test=1)
    break_remove_class_folder(tmp_path, "NCT-CRC-HE-100K-NONORM/MUS")
    rep = check_dataset("crc100k", tmp_path, expected=exp)
    assert any("missing class folder" in p and "MUS" in p for p in rep.problems)
    assert "partition trainval: found 0 images of class MUS, expected 2" in rep.problems


def test_unreadable_and_truncated_png(tmp_path: Path) -> None:
    exp = make_til(tmp_path, cancers=("brca",), n=2)
    files = sorted(p for p in tmp_path.rglob("*.png") if not p.is_symlink())
    break_garbage(files[0])
    break_truncate(files[1], keep=0.3)
    quick = check_dataset("til", tmp_path, expected=exp)
    assert quick.n_unreadable == 1 and any("1 unreadable images" in p for p in quick.problems)
    full = check_dataset("til", tmp_path, expected=exp, decode=True)  # decoding finds the truncated one too
    assert full.n_unreadable == 2 and files[1].name in " ".join(full.problems)


def test_wrong_image_size(tmp_path: Path) -> None:
    from PIL import Image

    exp = make_mhist(tmp_path)
    p = sorted((tmp_path / "images").iterdir())[0]
    Image.new("RGB", (200, 224)).save(p)
    rep = check_dataset("mhist", tmp_path, expected=exp)
    assert rep.n_wrong_size == 1 and any("not 224x224" in q and "200x224" in q for q in rep.problems)


def test_mhist_missing_listed_image(tmp_path: Path) -> None:
    exp = make_mhist(tmp_path)
    (tmp_path / "images" / "MHIST_0003.png").unlink()
    rep = check_dataset("mhist", tmp_path, expected=exp)
    assert any("1 images listed in annotations.csv are missing" in p and "MHIST_0003.png" in p for p in rep.problems)


def test_truncated_and_gzipped_hdf5(tmp_path: Path) -> None:
    exp = make_pcam(tmp_path)
    break_truncate(tmp_path / "camelyonpatch_level_2_split_train_x.h5", keep=0.5)
    f = tmp_path / "camelyonpatch_level_2_split_test_y.h5"
    f.rename(f.with_name(f.name + ".gz"))
    rep = check_dataset("pcam", tmp_path, expected=exp, decode=True)
    text = " ".join(rep.problems)
    assert "gunzip" in text and "camelyonpatch_level_2_split_test_y.h5.gz" in text
    assert "camelyonpatch_level_2_split_train_x.h5" in text and "download it again" in text
    assert "partition val: found 8 images, expected 8" not in text  # the intact split is fine


def test_pcam_wrong_shape(tmp_path: Path) -> None:
    import h5py
    import numpy as np

    exp = make_pcam(tmp_path, with_meta=False)
    with h5py.File(tmp_path / "camelyonpatch_level_2_split_valid_x.h5", "w") as h:
        h.create_dataset("x", data=np.zeros((8, 64, 64, 3), np.uint8))
    rep = check_dataset("pcam", tmp_path, expected=exp)
    assert any("(8, 64, 64, 3) uint8, expected (N, 96, 96, 3) uint8" in p for p in rep.problems)


def test_msi_missing_folder_names_the_zip(tmp_path: Path) -> None:
    make_msi(tmp_path, "STAD", patients=(2, 1), tiles_per=1)
    break_remove_class_folder(tmp_path, "STAD_TEST_MSIMUT")
    rep = check_dataset("msi_stad", tmp_path)
    assert any("STAD_TEST_MSIMUT.zip" in p and "10.5281/zenodo.2530835" in p for p in rep.problems)


def test_check_all_and_cli_exit_codes(tmp_path: Path, capsys) -> None:
    make_mhist(tmp_path / "mhist")
    reports, absent = check_all(tmp_path)
    assert [r.dataset for r in reports] == ["mhist"] and any(a.startswith("pcam") for a in absent)
    assert main(["datasets", "check", str(tmp_path / "mhist"), "--dataset", "mhist"]) == 1  # paper counts differ
    out = capsys.readouterr().out
    assert "expected 2175" in out and "PROBLEMS" in out
    good = tmp_path / "good"
    make_til(good, cancers=("brca",), n=1)
    assert main(["datasets", "check", str(good), "--dataset", "til", "--expect-total", "train=6", "val=2", "test=4",
                 "all=12"]) == 0
    assert main(["datasets", "check", str(tmp_path / "nothing_here")]) == 1
