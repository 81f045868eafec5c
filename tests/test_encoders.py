"""Encoder registry: presets, strict checkpoint loading, prefixes, key mapping, seeded random init."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest
import torch

from exaonepath_lab.encoders import (
    CheckpointMismatchError,
    create_encoder,
    encoder_spec,
    list_encoders,
    random_like,
)
from exaonepath_lab.encoders.checkpoint import hf_vit_to_timm, timm_vit_to_hf
from exaonepath_lab.models import CHECKPOINT_FORMAT, build_backbone

torch.set_num_threads(2)

TINY = {"img_size": 32, "patch_size": 8, "depth": 2}  # a real timm ViT, small enough for fast tests


def _x(n: int = 2, size: int = 224) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "name,dim,mean0",
    [("uni", 1024, 0.485), ("phikon", 768, 0.485), ("gigapath", 1536, 0.485), ("lunit-vits16", 384, 0.70322989),
     ("virchow", 1280, 0.485), ("exaonepath", 768, 0.485)],
)
def test_presets_build_on_meta_with_published_dims(name: str, dim: int, mean0: float) -> None:
    enc = create_encoder(f"random:{name}", device="meta")
    assert enc.embed_dim == dim
    assert enc(torch.empty(2, 3, 224, 224, device="meta")).shape == (2, dim)
    assert enc.mean[0] == pytest.approx(mean0)
    assert (enc.input_size, enc.resize_size) == (224, 256)


def test_preset_architectures_match_the_released_weights() -> None:
    sd = lambda n: {k: tuple(v.shape) for k, v in create_encoder(f"random:{n}", device="meta").model.state_dict().items()}  # noqa: E731
    v = sd("virchow")  # SwiGLU packed MLP: fc1 packs both halves (2 × 3,416), fc2 reads one half
    assert v["blocks.0.mlp.fc1.weight"] == (6832, 1280) and v["blocks.0.mlp.fc2.weight"] == (1280, 3416)
    assert v["pos_embed"] == (1, 257, 1280) and "blocks.31.ls1.gamma" in v  # 32 blocks, LayerScale
    g = sd("gigapath")
    assert g["patch_embed.proj.weight"] == (1536, 3, 16, 16) and "blocks.39.mlp.fc1.weight" in g
    u = sd("uni")
    assert u["patch_embed.proj.weight"] == (1024, 3, 16, 16) and "blocks.23.ls2.gamma" in u
    e = sd("exaonepath")
    assert e["pos_embed"] == (1, 197, 768) and "blocks.0.attn.qkv.bias" in e and "head.weight" not in e
    ex = create_encoder("random:exaonepath", device="meta").model
    assert ex.norm.eps == pytest.approx(1e-6) and ex.global_pool == "token"
    assert encoder_spec("lunit-vits16").std[2] == pytest.approx(0.20723464)


def test_unknown_names_and_missing_checkpoint_say_what_to_do() -> None:
    with pytest.raises(KeyError, match="known"):
        create_encoder("exaonepth")
    with pytest.raises(ValueError, match="random:exaonepath"):
        create_encoder("exaonepath")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        create_encoder("exaonepath", checkpoint="/nonexistent/EXAONEPath.ckpt")
    assert "timm:<name>" in list_encoders() and "virchow" in list_encoders()


# The EXAONEPath preset at depth 1 (the full ViT-B/16 shape is checked on 'meta' above): same key
# names, widths and preprocessing, a tenth of the weights to write and load.
SHALLOW = {"depth": 1}


@pytest.fixture(scope="module")
def vitb_state() -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A DINO-style ViT-B/16 (1 block) state dict (seeded random) and its CLS features on a fixed batch."""
    torch.manual_seed(1)
    m = build_backbone("vit_base_patch16_224", **SHALLOW).eval()
    with torch.no_grad():
        ref = m(_x())
    return {k: v.clone() for k, v in m.state_dict().items()}, ref


def test_exaonepath_checkpoint_loads_strictly_and_reproduces_features(tmp_path: Path, vitb_state) -> None:
    sd, ref = vitb_state
    path = tmp_path / "EXAONEPath.ckpt"
    torch.save({"state_dict": sd, "epoch": 10}, path)
    enc = create_encoder("exaonepath", checkpoint=path, **SHALLOW)
    assert torch.allclose(enc(_x()), ref, atol=1e-5)
    ident = enc.identity()
    assert len(ident["checkpoint_sha256"]) == 64 and ident["resize_size"] == 256
    assert not any(p.requires_grad for p in enc.model.parameters()) and not enc.model.training


def test_fabricated_state_dict_with_a_missing_key_fails_loudly(tmp_path: Path, vitb_state) -> None:
    sd = dict(vitb_state[0])
    del sd["norm.weight"]
    sd["head.weight"] = torch.zeros(1000, 768)  # unexpected
    sd["pos_embed"] = torch.zeros(1, 257, 768)  # shape mismatch (e.g. a /14 model)
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointMismatchError) as ei:
        create_encoder("exaonepath", checkpoint=path, **SHALLOW)
    msg = str(ei.value)
    assert str(path) in msg
    assert "missing (1): norm.weight" in msg and "unexpected (1): head.weight" in msg
    assert "pos_embed: checkpoint (1, 257, 768) vs model (1, 197, 768)" in msg


def test_prefixes_are_stripped_and_dino_head_keys_listed(tmp_path: Path) -> None:
    torch.manual_seed(2)
    m = build_backbone("vit_tiny_patch16_224", **TINY).eval()
    x = _x(2, 32)
    with torch.no_grad():
        ref = m(x)
    dino = {f"module.backbone.{k}": v for k, v in m.state_dict().items()}
    dino["module.head.last_layer.weight_g"] = torch.ones(10, 1)
    path = tmp_path / "dino_teacher.pth"
    torch.save({"teacher": dino, "epoch": 3, "args": argparse.Namespace(arch="vit_tiny")}, path)  # as DINO saves
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        enc = create_encoder("timm:vit_tiny_patch16_224", checkpoint=path, **TINY)
    assert torch.allclose(enc(x), ref, atol=1e-6)
    rep = enc.load_report
    assert rep.stripped_prefixes == ["module.", "backbone."] and rep.ignored_keys == ["head.last_layer.weight_g"]
    assert any("stripped prefixes ['module.', 'backbone.']" in str(i.message) for i in w)


def test_kit_dino_checkpoint_uses_teacher_backbone_and_trained_size(tmp_path: Path) -> None:
    torch.manual_seed(3)
    kw = {**TINY, "dynamic_img_size": True}
    m = build_backbone("vit_tiny_patch16_224", **kw).eval()
    path = tmp_path / "checkpoint.pth"
    torch.save({"format": CHECKPOINT_FORMAT, "model": {"timm_name": "vit_tiny_patch16_224", "timm_kwargs": kw},
                "teacher_backbone": m.state_dict(), "iteration": 5}, path)
    enc = create_encoder("kit-dino", checkpoint=path)
    assert (enc.input_size, enc.resize_size) == (32, 37)  # trained size, crop ratio 224/256
    with torch.no_grad():
        assert torch.allclose(enc(_x(2, 32)), m(_x(2, 32)), atol=1e-6)
    twin = random_like(enc, seed=0)
    assert twin.embed_dim == enc.embed_dim and not torch.allclose(twin(_x(2, 32)), enc(_x(2, 32)))
    bad = tmp_path / "not_kit.pth"
    torch.save({"state_dict": m.state_dict()}, bad)
    with pytest.raises(ValueError, match="not an exaonepath-lab DINO checkpoint"):
        create_encoder("kit-dino", checkpoint=bad)


def test_timm_safetensors_and_random_are_seeded(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = torch.random.get_rng_state()
    a = create_encoder("random:vit_tiny_patch16_224", seed=0, **TINY)
    b = create_encoder("random:vit_tiny_patch16_224", seed=0, **TINY)
    c = create_encoder("random:vit_tiny_patch16_224", seed=1, **TINY)
    assert torch.equal(torch.random.get_rng_state(), state), "random init must not touch the global RNG"
    x = _x(2, 32)
    assert torch.equal(a(x), b(x)) and not torch.allclose(a(x), c(x))
    assert a.input_size == 32 and a.identity()["checkpoint_sha256"] == "random-seed-0"
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in c.model.state_dict().items()}, str(path))
    d = create_encoder("timm:vit_tiny_patch16_224", checkpoint=path, **TINY)
    assert torch.equal(d(x), c(x))
    with pytest.raises(ValueError, match="random:vit_tiny"):
        create_encoder("timm:vit_tiny_patch16_224")


def test_hugging_face_vit_keys_map_to_timm(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    src = create_encoder("random:phikon", seed=4, img_size=32, patch_size=8, depth=2)
    hf = timm_vit_to_hf(src.model.state_dict())
    assert "encoder.layer.1.attention.attention.query.weight" in hf and "embeddings.cls_token" in hf
    hf["pooler.dense.weight"] = torch.zeros(768, 768)  # HF ViTModel's pooler: not part of the CLS embedding
    hf["pooler.dense.bias"] = torch.zeros(768)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in hf.items()}, str(path))
    enc = create_encoder("phikon", checkpoint=path, img_size=32, patch_size=8, depth=2)
    x = _x(2, 32)
    assert torch.allclose(enc(x), src(x), atol=1e-6)
    assert enc.model.norm.eps == pytest.approx(1e-12)  # HF ViT LayerNorm eps
    roundtrip = hf_vit_to_timm({k: v for k, v in hf.items() if not k.startswith("pooler")})
    assert set(roundtrip) == set(src.model.state_dict())
