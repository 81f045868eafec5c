"""The authors' Macenko target (issue 12.6): `--stain-target` takes their PNG, fits it as their
`macenko_normalizer()` does (torchstain's fit on the whole image, Io 240, alpha 1, beta 0.15), in
bounded memory, caches the fitted JSON next to the run, and every output records which target was used."""
from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from exaonepath_lab.cli import main
from exaonepath_lab.datasets import read_rgb
from exaonepath_lab.stain.target import AUTHORS_TARGET, StainTarget, default_target, file_sha256, resolve_target

NAME = Path(AUTHORS_TARGET).name  # target_TCGA-55-A48X_coords_[19440  9824]_[4096 4096].png
#: Working memory the streaming fit may use beside the uint8 image (~11.5 MiB measured). One float32
#: copy of the 4096² image's optical density alone would be 192 MiB, a float64 one 384 MiB.
FIT_MEMORY_BOUND = 32 * 2**20


def _h_and_e_4096(real_he: Path) -> np.ndarray:
    """A 4096×4096 H&E image: two real 1024² AMIDA13 crops (and their mirror images) tiled 4×4."""
    a = read_rgb(real_he / "stain_refs" / "henorm_amida13_example1.png")
    b = read_rgb(real_he / "stain_refs" / "henorm_amida13_example2.png")
    assert a.shape == b.shape == (1024, 1024, 3)
    tiles = [a, b, a[::-1], b[:, ::-1]]
    rows = [np.concatenate([tiles[(i + j) % 4] for j in range(4)], axis=1) for i in range(4)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def test_fit_of_a_4096_image_equals_torchstain_within_a_memory_bound(real_he: Path) -> None:
    import torchstain

    img = _h_and_e_4096(real_he)
    tracemalloc.start()
    t0 = time.perf_counter()
    ours = StainTarget.fit(img, source="4096 tiles")
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"streaming fit of 4096x4096: {seconds:.1f} s, peak traced memory {peak / 2**20:.1f} MiB")
    assert peak < FIT_MEMORY_BOUND, f"peak {peak / 2**20:.0f} MiB: a full-size float copy was made"
    assert ours.n_pixels == 4096 * 4096

    ts = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    ts.fit(torch.from_numpy(img).permute(2, 0, 1).contiguous(), Io=240, alpha=1, beta=0.15)
    np.testing.assert_allclose(ours.stain_matrix, ts.HERef.numpy(), atol=1e-5)
    np.testing.assert_allclose(ours.max_conc, ts.maxCRef.numpy(), rtol=1e-5)


def _authors_like_png(sample_he: dict[str, Path], folder: Path) -> Path:
    """A stand-in for the authors' file (same name, a real H&E image): their PNG is not redistributable."""
    from PIL import Image

    p = folder / "EXAONEPath" / "macenko_target" / NAME
    p.parent.mkdir(parents=True)
    Image.open(sample_he["tiatoolbox-target.png"]).convert("RGB").save(p)
    return p


def test_resolve_fits_the_image_caches_the_json_and_records_name_and_sha256(sample_he: dict[str, Path], tmp_path: Path) -> None:
    png = _authors_like_png(sample_he, tmp_path)
    cache = tmp_path / "run" / "stain_target.json"
    t = resolve_target(png, cache_path=cache)
    direct = StainTarget.fit(read_rgb(png))
    np.testing.assert_array_equal(t.stain_matrix, direct.stain_matrix)
    np.testing.assert_array_equal(StainTarget.load(png).stain_matrix, direct.stain_matrix)  # what the trainer calls
    # the authors' macenko_normalizer(): PIL -> ToTensor() * 255 (float CHW) -> TorchMacenkoNormalizer.fit, whose
    # code is torchstain's TorchMacenkoNormalizer line for line
    import torchstain
    from PIL import Image
    from torchvision import transforms

    theirs = torchstain.normalizers.MacenkoNormalizer(backend="torch")
    theirs.fit(transforms.ToTensor()(Image.open(png)) * 255)
    np.testing.assert_allclose(t.stain_matrix, theirs.HERef.numpy(), atol=1e-5)
    np.testing.assert_allclose(t.max_conc, theirs.maxCRef.numpy(), rtol=1e-5)
    d = json.loads(cache.read_text())
    assert d["source"] == NAME and d["source_sha256"] == file_sha256(png) and d["n_pixels"] == 1000 * 1000
    assert t.provenance() == {"name": NAME, "sha256": file_sha256(png)}
    # a second resolve reads the cache instead of refitting; a changed image is refitted
    cache.write_text(cache.read_text().replace(f'"n_pixels": {1000 * 1000}', '"n_pixels": 7'))
    assert resolve_target(png, cache_path=cache).n_pixels == 7
    from PIL import Image

    Image.fromarray(read_rgb(png)[:500]).save(png)
    assert resolve_target(png, cache_path=cache).n_pixels == 500 * 1000
    assert resolve_target(None) .fingerprint() == default_target().fingerprint()
    with pytest.raises(FileNotFoundError, match="git clone https://github.com/LG-AI-EXAONE/EXAONEPath"):
        resolve_target(tmp_path / NAME)
    rgba = tmp_path / "translucent.png"
    Image.fromarray(np.dstack([read_rgb(png), np.full(read_rgb(png).shape[:2], 128, np.uint8)])).save(rgba)
    with pytest.raises(ValueError, match="transparent"):
        resolve_target(rgba)


def test_every_command_accepts_the_png_and_records_the_target(sample_he: dict[str, Path], tmp_path: Path, capsys) -> None:
    from fixtures_downstream import make_pcam

    png = _authors_like_png(sample_he, tmp_path)
    sha = file_sha256(png)
    # normalize
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    from PIL import Image

    Image.fromarray(read_rgb(sample_he["stardist-histo.jpg"])).save(imgs / "a.png")
    assert main(["normalize", str(imgs), "--out", str(tmp_path / "norm"), "--stain-target", str(png), "--quiet"]) == 0
    rep = json.loads((tmp_path / "norm" / "normalize_report.json").read_text())
    assert rep["normalizer"]["target"]["source"] == NAME and rep["normalizer"]["target"]["source_sha256"] == sha
    assert json.loads((tmp_path / "norm" / "stain_target.json").read_text())["source_sha256"] == sha
    # extract
    out = tmp_path / "f.h5"
    assert main(["extract", "--encoder", "random:vit_tiny_patch16_224", "--encoder-kw", "img_size=32", "patch_size=8",
                 "depth=2", "--images", str(imgs), "--out", str(out), "--normalize", "--stain-target", str(png),
                 "--stain-backend", "torch", "--quiet"]) == 0
    from exaonepath_lab.features import load_features

    key = load_features(out).key
    assert key["normalizer"]["config"]["target"]["source_sha256"] == sha
    assert json.loads(Path(f"{out}.stain_target.json").read_text())["source"] == NAME
    # probe: the result and Table 1 see the authors' target (no target footnote)
    root = tmp_path / "pcam"
    make_pcam(root, n={"train": 16, "valid": 8, "test": 8})
    runs = tmp_path / "runs"
    assert main(["probe", "--encoder", "random:vit_tiny_patch16_224", "--encoder-kw", "img_size=96", "--no-resize",
                 "--dataset", "pcam", "--root", str(root), "--out", str(runs), "--iterations", "20", "--eval-every",
                 "10", "--seeds", "0", "--stain-backend", "torch", "--threads", "1", "--quiet", "--model-name", "m",
                 "--stain-target", str(png)]) == 0
    res = json.loads((runs / "m__pcam__linear.json").read_text())
    assert res["stain_target"] == {"name": NAME, "sha256": sha}
    assert not any("target" in d for d in res["protocol_deviations"])
    assert (runs / "stain_target.json").is_file()
    # train: the fitted JSON is written next to the run and the run's config points to it
    run = tmp_path / "run"
    assert main(["train", "--preset", "cpu-demo", "--data", str(tmp_path / "no-data"), "--out", str(run),
                 "--stain-target", str(png), "--no-progress"]) == 1  # stops at the missing data, after the target
    assert json.loads((run / "stain_target.json").read_text())["source_sha256"] == sha
    assert "Macenko target: " + NAME in capsys.readouterr().err


def test_train_with_the_png_resumes_from_another_working_directory(sample_he: dict[str, Path], sample_tiles: Path,
                                                                    tmp_path: Path, monkeypatch) -> None:
    """`train --out run --stain-target PNG`, then the same run resumed as `--out /abs/run --resume` from elsewhere:
    the fitted target's path in the run's config must not depend on the working directory (else resume is refused)."""
    png = _authors_like_png(sample_he, tmp_path)
    tiny = ["--set", "max_iters=2", "--set", "batch_size=2", "--set", "n_local_crops=2", "--set", "out_dim=64",
            "--set", "head_hidden_dim=32", "--set", "head_bottleneck_dim=16", "--set", "checkpoint_every=1",
            "--set", 'timm_kwargs={"img_size":32,"patch_size":8,"depth":1,"embed_dim":32,"num_heads":2}']
    data = str(sample_tiles / "cmu")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "cpu-demo", "--data", data, "--out", "run", "--stain-target", str(png),
                 "--no-progress", *tiny]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["train", "--preset", "cpu-demo", "--data", data, "--out", str(tmp_path / "run"), "--stain-target",
                 str(png), "--no-progress", "--resume", *tiny]) == 0
