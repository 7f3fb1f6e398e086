"""ConceptCLIP's image tower from local checkpoints: a timm ViT and an open_clip model, each made
and saved by the test itself (no hub), loaded through the model config's `image.weights`."""
import pytest
import torch

from models.image_encoder import ImageEncoder, ImageEncoderConfig


def _tiny_timm(img_size: int, width: int = 48, depth: int = 2):
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=img_size, patch_size=16, embed_dim=width, depth=depth, num_heads=2,
                             mlp_ratio=2.0, num_classes=0, global_pool="token").eval()


def _save_safetensors(model, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def test_the_image_tower_starts_from_an_open_clip_checkpoint(tmp_path):
    from open_clip.model import CLIP

    torch.manual_seed(1)
    clip = CLIP(embed_dim=24, vision_cfg={"image_size": 32, "patch_size": 16, "width": 64, "layers": 2,
                                          "head_width": 32, "mlp_ratio": 4.0},
                text_cfg={"context_length": 8, "vocab_size": 50, "width": 32, "heads": 2, "layers": 1}).eval()
    with torch.no_grad():  # non-trivial norms and embeddings, so that a missed key shows
        for name, tensor in clip.visual.named_parameters():
            tensor.add_(0.1 * torch.randn_like(tensor))
    path = tmp_path / "open_clip.pt"
    torch.save(clip.state_dict(), path)
    ours = ImageEncoder(ImageEncoderConfig.from_dict({
        "image_size": 32, "patch_size": 16, "width": 64, "depth": 2, "heads": 2, "mlp_ratio": 4.0, "pool": "token",
        "pre_norm": True, "norm_eps": 1e-5, "weights": str(path)})).eval()
    images = torch.randn(3, 3, 32, 32)
    clip.visual.output_tokens = True
    with torch.no_grad():
        their_pooled, their_tokens = clip.visual(images)
        pooled, patches = ours(images)
    assert torch.allclose(patches, their_tokens, atol=1e-5)
    assert torch.allclose(pooled @ clip.visual.proj, their_pooled, atol=1e-5)


def test_the_image_tower_starts_from_a_timm_checkpoint_of_another_grid(tmp_path):
    from timm.layers import resample_abs_pos_embed

    source = _tiny_timm(img_size=32)  # a 2 x 2 patch grid
    with torch.no_grad():
        source.pos_embed.normal_()
    path = _save_safetensors(source, tmp_path / "vit.safetensors")
    ours = ImageEncoder(ImageEncoderConfig(image_size=64, patch_size=16, width=48, depth=2, heads=2, mlp_ratio=2.0,
                                           weights=path))  # a 4 x 4 grid
    expected = resample_abs_pos_embed(source.pos_embed.detach(), new_size=(4, 4), old_size=(2, 2),
                                      num_prefix_tokens=1)
    assert ours.vit.pos_embed.shape == (1, 17, 48)
    assert torch.allclose(ours.vit.pos_embed.detach(), expected, atol=1e-6)
    theirs = source.state_dict()
    for name, tensor in ours.vit.state_dict().items():
        if name != "pos_embed":
            assert torch.equal(tensor, theirs[name]), name


@pytest.mark.parametrize("change, named", [({"depth": 3}, "blocks.2"), ({"width": 64}, "does not fit"),
                                           ({"pre_norm": True}, "norm_pre")])
def test_a_checkpoint_of_another_architecture_is_refused(tmp_path, change, named):
    path = _save_safetensors(_tiny_timm(img_size=32), tmp_path / "vit.safetensors")
    cfg = {"image_size": 32, "patch_size": 16, "width": 48, "depth": 2, "heads": 2, "mlp_ratio": 2.0,
           "weights": path, **change}
    with pytest.raises(ValueError, match=named):
        ImageEncoder(ImageEncoderConfig.from_dict(cfg))


def test_a_missing_checkpoint_or_an_unknown_key_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="image.weights"):
        ImageEncoder(ImageEncoderConfig(image_size=32, width=48, depth=1, heads=2, weights=str(tmp_path / "no.pt")))
    with pytest.raises(ValueError, match="weight_file"):
        ImageEncoderConfig.from_dict({"image_size": 32, "weight_file": "x.pt"})
