"""The user's own labelled patches (`--dataset folder`) and the README's flow with one ROOT."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from exaonepath_lab.cli import main
from exaonepath_lab.probing.datasets import load_dataset

from fixtures_downstream import make_mhist, tile

TINY = ["--encoder", "random:vit_tiny_patch16_224", "--encoder-kw", "img_size=32", "--no-resize", "--iterations", "60",
        "--eval-every", "20", "--seeds", "0", "--threads", "1", "--quiet"]


def make_folder(root: Path, n_slides: int = 10, per: int = 3, size: int = 32) -> None:
    """ROOT/<class>/<slide>/*.png; slide s03 has patches of both classes (one slide, two folders)."""
    k = 0
    for s in range(n_slides):
        classes = ["normal", "tumor"] if s == 3 else [["normal", "tumor"][s % 2]]
        for cls in classes:
            d = root / cls / f"s{s:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per):
                Image.fromarray(tile(size, int(cls == "tumor"), k)).save(d / f"p{i}.png")
                k += 1


def test_folder_split_is_by_slide_saved_and_reused(tmp_path: Path) -> None:
    root = tmp_path / "my_task"
    make_folder(root)
    ds = load_dataset("folder", root)
    m = ds.meta
    assert ds.classes == ["normal", "tumor"] and ds.dataset_name == "folder:my_task"
    assert len(m) == 33 and (m.label == (m.class_name == "tumor")).all()
    assert (m.groupby("slide_id")["split"].nunique() == 1).all()  # never split within a slide
    per_split = m.groupby("split")["slide_id"].nunique().to_dict()
    assert per_split == {"test": 2, "train": 6, "val": 2}  # round(10 * 0.2) slides each
    assert m[m.slide_id == "s03"].class_name.nunique() == 2
    saved = root / "splits" / "folder_my_task_split_seed0_val0.2_test0.2.csv"
    assert saved.is_file() and json.loads(saved.with_suffix(".json").read_text())["n_test"] == len(m[m.split == "test"])
    assert (load_dataset("folder", root).meta.split == m.split).all()
    other = load_dataset("folder", root, val_fraction=0.1, test_fraction=0.3).meta
    assert other.groupby("split")["slide_id"].nunique().to_dict() == {"test": 3, "train": 6, "val": 1}
    assert ds[0]["image"].shape == (32, 32, 3)


def test_folder_from_csv_by_patient(tmp_path: Path) -> None:
    make_folder(tmp_path / "imgs", n_slides=6, per=2)
    rows = [{"path": p.relative_to(tmp_path).as_posix(), "label": p.parent.parent.name, "patient": f"P{p.parent.name[-1]}"}
            for p in sorted((tmp_path / "imgs").rglob("*.png"))]
    pd.DataFrame(rows).to_csv(tmp_path / "cohort.csv", index=False)
    ds = load_dataset("folder", tmp_path / "cohort.csv")
    assert ds.dataset_name == "folder:cohort" and len(ds) == len(rows)
    assert (ds.meta.groupby("patient")["split"].nunique() == 1).all() and set(ds.meta.split) == {"train", "val", "test"}
    assert (tmp_path / "splits" / "folder_cohort_split_seed0_val0.2_test0.2.csv").is_file()



def test_folder_csv_written_on_windows(tmp_path: Path) -> None:
    """A CSV exported on Windows has backslash-separated relative paths (and often a BOM): it reads the same."""
    make_folder(tmp_path / "imgs", n_slides=6, per=2)
    files = sorted((tmp_path / "imgs").rglob("*.png"))
    rows = [{"path": str(p.relative_to(tmp_path)).replace("/", "\\"), "label": p.parent.parent.name,
             "slide": p.parent.name} for p in files]
    pd.DataFrame(rows).to_csv(tmp_path / "win.csv", index=False, encoding="utf-8-sig", lineterminator="\r\n")
    ds = load_dataset("folder", tmp_path / "win.csv")
    assert len(ds) == len(files) and sorted(ds.meta.path) == sorted(map(str, files))
    assert ds.meta.relpath.str.startswith("imgs/").all()  # split keys are the same as for a POSIX CSV
    pd.DataFrame({"path": ["C:\\data\\a.png"] * 3, "label": ["x", "y", "x"], "slide": ["1", "2", "3"]}).to_csv(
        tmp_path / "drive.csv", index=False)
    with pytest.raises(ValueError, match=r"3 files listed in .*drive.csv do not exist.*Windows drive paths"):
        load_dataset("folder", tmp_path / "drive.csv")

def test_folder_errors_name_the_fix(tmp_path: Path) -> None:
    make_folder(tmp_path, n_slides=4)
    Image.fromarray(tile(32, 0, 0)).save(tmp_path / "normal" / "loose.png")
    with pytest.raises(ValueError, match=r"directly in a class folder .*ROOT/<class>/<slide>/"):
        load_dataset("folder", tmp_path)
    pd.DataFrame({"path": ["a.png"], "label": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"lacks columns \['slide or patient'\]"):
        load_dataset("folder", tmp_path / "bad.csv")
    files = sorted(tmp_path.glob("*/s*/p*.png"))
    rows = pd.DataFrame({"path": [f.relative_to(tmp_path).as_posix() for f in files],
                         "label": [f.parent.parent.name for f in files], "slide": [f.parent.name for f in files]})
    rows.loc[1, "label"] = ""  # one patch nobody labelled
    rows.to_csv(tmp_path / "unlabelled.csv", index=False)
    with pytest.raises(ValueError, match=r"unlabelled.csv: 1 rows have an empty 'label' \(e.g. row 3 of the file\)"):
        load_dataset("folder", tmp_path / "unlabelled.csv")  # not a class named ''


def test_probe_folder_knn_and_its_table_column(tmp_path: Path, capsys) -> None:
    root = tmp_path / "inhouse"
    make_folder(root)
    out = tmp_path / "runs"
    assert main(["probe", *TINY, "--dataset", "folder", "--root", str(root), "--out", str(out), "--knn",
                 "--model-name", "tiny"]) == 0
    res = json.loads((out / "tiny__folder_inhouse__linear.json").read_text())
    assert res["dataset"] == "folder:inhouse" and res["classes"] == ["normal", "tumor"]
    assert sum(res["n"].values()) == 33 and (out / "tiny__folder_inhouse__knn.json").is_file()
    assert main(["table", "--results", str(out), "--out", str(tmp_path / "table"), "--no-published"]) == 0
    md = (tmp_path / "table" / "table1.md").read_text()
    assert "folder:inhouse" in md.splitlines()[0]
    row = [l for l in md.splitlines() if l.startswith("| tiny")][0]
    assert row.rstrip(" |").split("|")[-1].strip() not in ("", "-")  # its own column has the score


def test_readme_flow_with_one_root(tmp_path: Path, capsys) -> None:
    """README: `datasets check ROOT`, `probe --dataset X --root ROOT`, `table` -- the same ROOT throughout."""
    root = tmp_path / "downstream"
    make_mhist(root / "mhist", n_train=(6, 4), n_test=(3, 3))
    assert main(["datasets", "check", str(root), "--expect-total", "trainval=10", "test=6"]) == 0
    assert "[OK] mhist" in capsys.readouterr().out
    out = tmp_path / "results"
    assert main(["probe", "--encoder", "random:vit_tiny_patch16_224", "--encoder-kw", "img_size=32", "--dataset", "mhist",
                 "--root", str(root), "--out", str(out), "--iterations", "40", "--eval-every", "20", "--seeds", "0",
                 "--threads", "1", "--quiet", "--model-name", "tiny", "--batch-size", "8"]) == 0
    assert (root / "mhist" / "splits" / "mhist_split_seed0_val0.2.csv").is_file()  # saved with the data
    assert main(["table", "--results", str(out), "--out", str(tmp_path / "table")]) == 0
    assert any(l.startswith("| tiny ‡") for l in (tmp_path / "table" / "table1.md").read_text().splitlines())


def test_folder_class_with_one_slide_is_refused_before_a_split_is_saved(tmp_path: Path) -> None:
    """A class whose patches all come from one slide cannot be in train and test: say so, save nothing."""
    root = tmp_path / "task"
    make_folder(root, n_slides=8)  # 8 slides, normal/tumor alternating (s03 holds both)
    for s in ("s01", "s05", "s07"):  # tumor keeps one slide of its own (s03 has tumor patches too, but is
        shutil.rmtree(root / "tumor" / s)  # a 'normal' slide by majority label: tie -> first class)
    with pytest.raises(ValueError, match=r"leaves (train|test) without any patch of class\(es\) \['tumor'\].*add"):
        load_dataset("folder", root)
    assert not (root / "splits").exists() or not any((root / "splits").iterdir())


def test_notebook_06_probes_a_folder_task_under_its_own_name(tmp_path: Path) -> None:
    """Notebook 06 with ``dataset="folder"``: results are ``folder:<name>`` (its own Table 1 column), not "folder"."""
    import papermill as pm

    root = tmp_path / "inhouse"
    make_folder(root)
    nb = Path(__file__).resolve().parents[1] / "notebooks" / "06_linear_probing.ipynb"
    out = tmp_path / "out"
    pm.execute_notebook(str(nb), str(tmp_path / "06.ipynb"), cwd=str(nb.parent), kernel_name="python3",
                        progress_bar=False, request_save_on_cell_execute=False,
                        parameters={"out_dir": str(out), "smoke": True, "dataset": "folder", "dataset_root": str(root),
                                    "encoder": "random:vit_tiny_patch16_224", "seeds": [0], "iterations": 20})
    results = [json.loads(p.read_text()) for p in sorted((out / "probe").glob("*.json"))]
    assert results and {r["dataset"] for r in results} == {"folder:inhouse"}
    assert json.loads((out / "notebook_summary.json").read_text())["dataset"] == "folder:inhouse"


def test_folder_without_images_is_not_a_class(tmp_path: Path) -> None:
    """A probe's --out inside ROOT (features/*.h5, *.json) must not turn into an empty third class."""
    root = tmp_path / "task"
    make_folder(root, n_slides=6)
    assert load_dataset("folder", root).classes == ["normal", "tumor"]
    (root / "results" / "features").mkdir(parents=True)
    (root / "results" / "features" / "x.h5").write_bytes(b"")
    with pytest.raises(ValueError, match=r"task/results hold\(s\) no images .*move or delete it"):
        load_dataset("folder", root)
