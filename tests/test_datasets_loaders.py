"""Downstream loaders on generated fixtures in each dataset's real layout: items, labels, splits."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from exaonepath_lab.probing.datasets import DATASETS, load_dataset
from exaonepath_lab.probing.manifests import load_manifest
from exaonepath_lab.probing.splits import group_val_mask, stratified_val_mask, tcga_patient

from fixtures_downstream import make_crc100k, make_mhist, make_msi, make_pcam, make_til, tile


def test_mhist_items_labels_and_saved_split(tmp_path: Path) -> None:
    make_mhist(tmp_path, n_train=(8, 4), n_test=(3, 2))
    ds = load_dataset("mhist", tmp_path)
    m = ds.meta
    assert len(ds) == 17 and set(m.columns) >= {"path", "label", "class_name", "split", "patient", "relpath"}
    assert m.split.value_counts().to_dict() == {"train": 10, "test": 5, "val": 2}  # round(12*0.2)=2: 1 HP + 1 SSA
    val = m[m.split == "val"]
    assert sorted(val.class_name) == ["HP", "SSA"]  # stratified
    item = ds[0]
    assert item["index"] == 0 and item["image"].shape == (224, 224, 3) and item["image"].dtype == np.uint8
    assert (m.label == (m.class_name == "SSA").astype(int)).all()
    split_csv = tmp_path / "splits" / "mhist_split_seed0_val0.2.csv"
    assert split_csv.is_file() and json.loads(split_csv.with_suffix(".json").read_text())["n_val"] == 2
    # reload reads the saved file (same split), and only-one-split loading works
    again = load_dataset("mhist", tmp_path)
    assert (again.meta.split == m.split).all()
    assert len(load_dataset("mhist", tmp_path, split="val")) == 2


def test_saved_split_is_validated_against_files(tmp_path: Path) -> None:
    make_mhist(tmp_path)
    load_dataset("mhist", tmp_path)
    # a training image disappears and a new one appears: the saved split no longer matches
    ann = pd.read_csv(tmp_path / "annotations.csv")
    ann.loc[0, "Image Name"] = "MHIST_new.png"
    (tmp_path / "images" / "MHIST_0000.png").rename(tmp_path / "images" / "MHIST_new.png")
    ann.to_csv(tmp_path / "annotations.csv", index=False)
    with pytest.raises(ValueError, match=r"1 listed files are missing, 1 files are not in it.*delete"):
        load_dataset("mhist", tmp_path)


def test_split_rule_hits_the_paper_counts() -> None:
    # MHIST's train partition: 1,545 HP + 630 SSA -> the paper's 1,740 / 435
    keys = np.array([f"img{i:05d}.png" for i in range(2175)])
    labels = np.array([0] * 1545 + [1] * 630)
    mask = stratified_val_mask(keys, labels, val_fraction=0.2, seed=0)
    assert mask.sum() == 435 and (~mask).sum() == 1740
    assert mask[labels == 0].sum() == 309 and mask[labels == 1].sum() == 126
    # independent of the order items arrive in
    perm = np.random.default_rng(1).permutation(2175)
    np.testing.assert_array_equal(stratified_val_mask(keys[perm], labels[perm], val_fraction=0.2, seed=0), mask[perm])
    assert not np.array_equal(stratified_val_mask(keys, labels, val_fraction=0.2, seed=1), mask)


def test_crc100k_layout_and_classes(tmp_path: Path) -> None:
    make_crc100k(tmp_path, n_train=5, n_test=2)
    ds = load_dataset("crc100k", tmp_path)
    m = ds.meta
    assert ds.classes == ["ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM"]
    assert m.split.value_counts().to_dict() == {"train": 36, "test": 18, "val": 9}
    assert (m[m.split == "val"].class_name.value_counts() == 1).all()
    assert m[m.split == "test"].path.str.contains("CRC-VAL-HE-7K").all()
    assert ds[3]["image"].shape == (224, 224, 3)


def test_crc100k_normalized_release_is_named(tmp_path: Path) -> None:
    make_crc100k(tmp_path, n_train=1, n_test=1)
    (tmp_path / "NCT-CRC-HE-100K-NONORM").rename(tmp_path / "NCT-CRC-HE-100K")
    with pytest.raises(ValueError, match="NONORM"):
        load_dataset("crc100k", tmp_path)


def test_til_given_splits_and_patients(tmp_path: Path) -> None:
    make_til(tmp_path, cancers=("brca", "luad"), n=1)
    m = load_dataset("til", tmp_path).meta
    assert m.split.value_counts().to_dict() == {"train": 12, "test": 8, "val": 4}  # pancancer/ links not counted
    assert m.patient.str.match(r"TCGA-[A-Z]\d-\d{4}$").all()
    assert set(m.class_name) == {"til-negative", "til-positive"}


def test_msi_split_is_patient_level(tmp_path: Path) -> None:
    make_msi(tmp_path, "CRC_DX", patients=(10, 4), tiles_per=3)
    m = load_dataset("msi_crc", tmp_path).meta
    tr, va, te = (m[m.split == s] for s in ("train", "val", "test"))
    assert len(te) == 24 and len(tr) + len(va) == 60
    assert set(tr.patient).isdisjoint(va.patient)  # no patient on both sides
    assert va.patient.nunique() == 4  # round(20 patients * 0.2), 2 per label
    assert sorted(va.groupby("class_name").patient.nunique().tolist()) == [2, 2]
    assert (m.label == (m.class_name == "MSIMUT")).all()
    with pytest.raises(ValueError, match="STAD_TRAIN_MSS"):
        load_dataset("msi_stad", tmp_path)


def test_msi_tile_without_barcode_is_an_error(tmp_path: Path) -> None:
    make_msi(tmp_path, "STAD", patients=(2, 1), tiles_per=1)
    d = tmp_path / "STAD_TRAIN_MSS" / "MSS"
    (d / "renamed.png").write_bytes(next(d.iterdir()).read_bytes())
    with pytest.raises(ValueError, match="no TCGA patient barcode"):
        load_dataset("msi_stad", tmp_path)


def test_tcga_barcode_regex() -> None:
    assert tcga_patient("blk-AAAFIYHTSVPE-TCGA-G4-6309-01Z-00-DX1.png") == "TCGA-G4-6309"
    assert tcga_patient("tcga-a6-2675-01z.png") == "TCGA-A6-2675"
    assert tcga_patient("no-barcode.png") == ""


def test_group_split_never_splits_a_group() -> None:
    groups = np.repeat([f"P{i:02d}" for i in range(30)], 5)
    labels = np.repeat(np.arange(30) % 2, 5)
    keys = np.array([f"t{i:04d}" for i in range(150)])
    mask = group_val_mask(keys, groups, labels, val_fraction=0.2, seed=0)
    per_group = pd.Series(mask).groupby(groups).nunique()
    assert (per_group == 1).all() and mask.sum() == 30


def test_pcam_lazy_hdf5(tmp_path: Path) -> None:
    make_pcam(tmp_path)
    ds = load_dataset("pcam", tmp_path)
    m = ds.meta
    assert m.split.value_counts().to_dict() == {"train": 16, "test": 8, "val": 8}
    assert m.slide_id.iloc[0].startswith("camelyon16_")
    item = ds[20]
    assert item["image"].shape == (96, 96, 3) and item["image"].dtype == np.uint8
    np.testing.assert_array_equal(item["image"], tile(96, int(m.label[20]), 1000 * len("valid") + int(m.index_in_file[20])))
    import pickle

    clone = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker receives: no open handle inside
    assert clone._handles == {} and clone[20]["image"].shape == (96, 96, 3)


def test_pcam_under_a_dataloader_with_workers(tmp_path: Path) -> None:
    import torch

    make_pcam(tmp_path, n={"train": 6, "valid": 2, "test": 2}, with_meta=False)
    ds = load_dataset("pcam", tmp_path, split="train")
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2,
                                         collate_fn=lambda b: np.stack([x["image"] for x in b]))
    assert sum(len(b) for b in loader) == 6


def test_manifests_agree_with_the_code() -> None:
    for name, spec in DATASETS.items():
        m = load_manifest(name)
        assert m["name"] == name and tuple(m["classes"]) == spec.classes
        assert m["label_map"] == {c: i for i, c in enumerate(spec.classes)}
        assert m["table_column"] == spec.table_column and m["image_size_px"] == spec.image_size
        assert m["split_rule"] and m["source"] and m["license"] and "note" in m["checksums"]
        for part in m["partitions"].values():
            if "per_class" in part:
                assert sum(part["per_class"].values()) == part["total"]
    # paper counts, PROTOCOL §4
    assert load_manifest("mhist")["paper_splits"] == {"train": 1740, "val": 435, "test": 977}
    assert load_manifest("crc100k")["partitions"]["test"]["total"] == 7180
    assert load_manifest("til")["partitions"]["all"]["total"] == 209221 + 38601 + 56275


def test_cohort_schema_accepts_a_row_and_rejects_a_bad_one() -> None:
    import jsonschema

    schema = json.loads((Path(__file__).resolve().parents[1] / "data_manifests" / "pretraining_cohort.schema.json").read_text())
    jsonschema.validate({"slide_id": "s1", "path": "a.svs", "mpp": 0.2431, "site": "lab A", "scanner": "AT2"}, schema)
    jsonschema.validate({"slide_id": "s2", "path": "b.svs", "mpp": None, "mpp_override": 0.5}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"slide_id": "s3", "path": "c.svs", "mpp": 0}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"path": "d.svs", "mpp": 0.5}, schema)


def test_unknown_dataset_is_named() -> None:
    with pytest.raises(ValueError, match="known:"):
        load_dataset("camelyon17", ".")
