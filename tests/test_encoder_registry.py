"""timm's open registry: a user adds an encoder without editing the kit; list_encoders takes fnmatch patterns."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from exaonepath_lab.encoders import (
    ENCODERS,
    CheckpointMismatchError,
    EncoderSpec,
    Preprocessing,
    create_encoder,
    list_encoders,
    register_encoder,
)
from exaonepath_lab.encoders import registry
from exaonepath_lab.models import build_backbone

TINY = {"img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}


@pytest.fixture()
def clean_registry():
    """Registrations made by a test are undone after it."""
    before = (dict(ENCODERS), dict(registry.SPECIAL), dict(registry._SPECIAL_HELP))
    yield
    for live, saved in zip((ENCODERS, registry.SPECIAL, registry._SPECIAL_HELP), before):
        live.clear()
        live.update(saved)


def test_a_registered_spec_loads_its_weights_strictly_and_has_its_preprocessing(tmp_path: Path, clean_registry) -> None:
    spec = EncoderSpec("vit_tiny_patch16_224", TINY, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), input_size=32,
                       resize_size=36, description="my tiny ViT")
    assert register_encoder("my-tiny", spec) is spec
    torch.manual_seed(3)
    source = build_backbone("vit_tiny_patch16_224", **TINY).eval()
    weights = tmp_path / "my_tiny.pth"
    torch.save(source.state_dict(), weights)

    enc = create_encoder("my-tiny", checkpoint=weights)
    assert enc.embed_dim == 32 and enc.identity()["mean"] == [0.5, 0.5, 0.5]
    pre = Preprocessing.for_encoder(enc)
    assert (pre.resize_size, pre.crop_size) == (36, 32)
    imgs = [np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(2)]
    x = pre(imgs)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), source(x))  # the user's weights, not a random init
    assert create_encoder("random:my-tiny", seed=1).spec.timm_kwargs == TINY  # the random twin works too
    # a weight file of another architecture is refused by the strict loader
    torch.save(build_backbone("vit_tiny_patch16_224", **{**TINY, "depth": 2}).state_dict(), tmp_path / "other.pth")
    with pytest.raises(CheckpointMismatchError, match="unexpected"):
        create_encoder("my-tiny", checkpoint=tmp_path / "other.pth")


def test_a_registered_factory_is_called_and_usable_as_a_decorator(clean_registry) -> None:
    calls = []

    @register_encoder("my-factory")
    def my_factory(name, checkpoint, device, kwargs):
        """A tiny random ViT from a factory."""
        calls.append((name, checkpoint, dict(kwargs)))
        return create_encoder("random:vit_tiny_patch16_224", seed=0, device=device, **TINY)

    enc = create_encoder("my-factory", checkpoint=None, foo=1)
    assert calls == [("my-factory", None, {"foo": 1})] and enc.embed_dim == 32
    assert list_encoders("my-*") == {"my-factory": "A tiny random ViT from a factory."}


def test_registering_refuses_clashes_and_bad_names(clean_registry) -> None:
    spec = EncoderSpec("vit_tiny_patch16_224", TINY, description="x")
    with pytest.raises(ValueError, match="already registered.*overwrite=True"):
        register_encoder("uni", spec)
    register_encoder("uni", spec, overwrite=True)
    assert ENCODERS["uni"] is spec
    with pytest.raises(ValueError, match="without ':'"):
        register_encoder("timm:mine", spec)
    with pytest.raises(ValueError, match="either spec= or factory="):
        register_encoder("both", spec, factory=lambda *a: None)
    with pytest.raises(TypeError, match="EncoderSpec"):
        register_encoder("not-a-spec", {"timm_name": "vit_tiny_patch16_224"})  # type: ignore[arg-type]


def test_list_encoders_filters_with_fnmatch_patterns() -> None:
    everything = list_encoders()
    assert {"exaonepath", "uni", "phikon", "gigapath", "virchow", "kit-dino", "timm:<name>"} <= set(everything)
    assert list(list_encoders("uni")) == ["uni"]
    assert set(list_encoders("*path")) == {"exaonepath", "gigapath"}
    assert set(list_encoders(["lunit*", "phikon"])) == {"lunit-vits16", "lunit", "phikon"}
    assert set(list_encoders("random:*")) == {"random:<preset|timm_name>"}
    assert list_encoders("no-such-*") == {} and list_encoders("") == everything


def test_cli_unknown_encoder_and_mismatched_checkpoint_are_one_readable_error(tmp_path, capsys) -> None:
    """`--encoder foo` is a one-line error with the known names (not a KeyError traceback), and a checkpoint
    of another architecture names a few mismatched keys with the count, not all 150, then the fix."""
    import timm

    from PIL import Image

    from exaonepath_lab.cli import main

    (tmp_path / "s1").mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "s1" / "a.png")
    assert main(["extract", "--encoder", "foo", "--images", str(tmp_path), "--out", str(tmp_path / "f.h5")]) == 1
    err = capsys.readouterr().err
    assert "error: unknown encoder 'foo'; known:" in err and "kit-dino" in err and "Traceback" not in err
    assert main(["extract", "--encoder", "foo:bar", "--images", str(tmp_path), "--out", str(tmp_path / "f.h5")]) == 1
    assert "error: unknown encoder prefix 'foo' in 'foo:bar'; known prefixes:" in capsys.readouterr().err

    ckpt = tmp_path / "tiny.pth"
    torch.save(timm.create_model("vit_tiny_patch16_224", num_classes=0, depth=2).state_dict(), ckpt)
    with pytest.raises(CheckpointMismatchError) as ei:
        create_encoder("timm:vit_small_patch16_224", checkpoint=ckpt, depth=2)
    msg = str(ei.value)
    assert str(ckpt) in msg and "shape mismatch (30): " in msg and "... and 22 more" in msg
    assert len(msg) < 2000 and msg.rstrip().endswith("the weights were trained with.")


def test_extract_names_a_non_image_before_loading_the_encoder(tmp_path, capsys) -> None:
    """`extract --images` opens every file's header first: a non-image is named with the fix before the
    encoder is built or any feature computed (kit-dino without a checkpoint would fail later otherwise)."""
    from PIL import Image

    from exaonepath_lab.cli import main

    (tmp_path / "s1").mkdir()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "s1" / "a.png")
    (tmp_path / "s1" / "b.png").write_text("not an image")
    assert main(["extract", "--encoder", "kit-dino", "--images", str(tmp_path), "--out", str(tmp_path / "f.h5")]) == 1
    err = capsys.readouterr().err
    assert f"1 file(s) are not readable images: {tmp_path / 's1' / 'b.png'}" in err and "needs checkpoint" not in err
