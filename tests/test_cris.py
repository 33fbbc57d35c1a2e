"""CRIS as published (DerrickWang005/CRIS.pytorch) on tiny random open_clip towers: the dense attention pool
reuses CLIP's pretrained attention pool (same tensors, same pooled embedding), output shapes and the padding
mask, one short learning run, the parameter groups and a spec/state-dict round trip."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from textwsss.guide.tiny import TINY_RN, register_tiny_configs
from textwsss.losses.segmentation import text_to_pixel_loss
from textwsss.models.cris import CRIS, DenseAttentionPool, create_clip, sine_positions_1d, sine_positions_2d
from textwsss.models.factory import build_cris, build_model

SMALL = dict(decoder_layers=1, heads=2, ffn_dim=64, dim=32)


def _tiny_clip(seed: int = 0, pretrained: str = "none"):
    register_tiny_configs()
    torch.manual_seed(seed)
    clip, tokenizer, quick_gelu = create_clip(TINY_RN, pretrained)
    return clip, tokenizer, quick_gelu


def _tiny_cris(**kw):
    return build_cris(**{"arch": TINY_RN, "pretrained": "none", **SMALL, **kw})


def _layer4(visual, x):
    return visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(x)))))


def _randomise_batchnorm(module):
    """Random BN affine parameters and statistics (open_clip zero-initialises the bottlenecks' last BN)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)


# ------------------------------------------------------------------------------------------ dense attention pool
def test_dense_pool_reproduces_clip_embedding_and_resizes_positions():
    clip, tokenizer, _ = _tiny_clip()
    _randomise_batchnorm(clip.visual)
    clip.eval()
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size  # 64: native input, 2x2 layer4 grid
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        reference = clip.encode_image(x)  # open_clip's own AttentionPool2d output (B, embed_dim)
    model = CRIS(clip, tokenizer, arch=TINY_RN, **SMALL).eval()
    pool = model.dense_pool
    assert isinstance(pool, DenseAttentionPool) and pool is model.clip.visual.attnpool
    grid = pool.grid
    with torch.no_grad():
        f = _layer4(model.clip.visual, x)
        assert f.shape[-2:] == (grid, grid)
        torch.testing.assert_close(pool.spatial_positions(grid, grid), pool.positional_embedding[1:])
        dense, pooled = pool(f, with_global=True)
        torch.testing.assert_close(pooled, reference, atol=1e-5, rtol=1e-5)
        assert dense.shape == (2, pool.output_dim, grid, grid) and (dense >= 0).all()
        # The mean token is only a query: the pixels' outputs are those of the published pixel-only pool.
        torch.testing.assert_close(pool(f), dense, atol=1e-5, rtol=1e-5)
        # Published computation: pixel tokens (+ spatial positions) attend to each other with CLIP's q/k/v/c
        # projections, plus the 1x1 conv/BN residual branch, then ReLU.
        tokens = (f.flatten(2) + pool.positional_embedding[1:].T[None]).permute(2, 0, 1)  # (hw, B, C)
        attn, _ = F.multi_head_attention_forward(
            tokens, tokens, tokens, tokens.shape[-1], pool.num_heads, None,
            torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), None, None, False, 0.0,
            pool.c_proj.weight, pool.c_proj.bias, training=False, need_weights=False,
            use_separate_proj_weight=True, q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
            v_proj_weight=pool.v_proj.weight)
        expected = F.relu(attn.permute(1, 2, 0).reshape(dense.shape) + pool.connect(f))
        torch.testing.assert_close(dense, expected, atol=1e-5, rtol=1e-5)

        # Another input size: the spatial positional embedding is resized (bicubic) to the layer4 map.
        x2 = torch.randn(1, 3, 96, 160)
        f2 = _layer4(model.clip.visual, x2)
        h, w = f2.shape[-2:]
        assert (h, w) == (3, 5)
        pos = pool.spatial_positions(h, w)
        assert pos.shape == (h * w, pool.positional_embedding.shape[1])
        grid_pos = pool.positional_embedding[1:].T.reshape(1, -1, grid, grid)
        torch.testing.assert_close(pos.T.reshape(1, -1, h, w),
                                   F.interpolate(grid_pos, size=(h, w), mode="bicubic", align_corners=False))
        dense2, pooled2 = pool(f2, with_global=True)
        assert dense2.shape == (1, pool.output_dim, h, w) and pooled2.shape == (1, pool.output_dim)
        v3, v4, v5 = model.encode_image(torch.rand(1, 3, 96, 160))
        assert v5.shape == (1, pool.output_dim, h, w) and v4.shape[-2:] == (6, 10) and v3.shape[-2:] == (12, 20)


def test_dense_pool_shares_clip_tensors_and_loads_them_from_a_checkpoint(tmp_path):
    clip, tokenizer, _ = _tiny_clip()
    original = clip.visual.attnpool
    tensors = {n: p for n, p in original.named_parameters()}
    model = CRIS(clip, tokenizer, arch=TINY_RN, **SMALL)
    pool = model.dense_pool
    for name in ("q_proj", "k_proj", "v_proj", "c_proj"):
        assert getattr(pool, name) is getattr(original, name)
    for name, p in tensors.items():
        mine = pool.get_parameter(name)
        assert mine is p and mine.data_ptr() == p.data_ptr()
    # Registered once, under CLIP's own names (plus the new residual branch), and trained with the backbone.
    keys = [k for k in model.state_dict() if "attnpool" in k]
    assert {k.removeprefix("clip.visual.attnpool.") for k in keys if "connect" not in k} == set(
        original.state_dict())
    assert all(k.startswith("clip.visual.attnpool.") for k in keys)

    # A CLIP checkpoint (here: another random tiny CLIP saved to disk) lands in the dense pool.
    donor, _, _ = _tiny_clip(seed=1)
    path = tmp_path / "tiny-rn.pt"
    torch.save(donor.state_dict(), path)
    loaded = _tiny_cris(pretrained=str(path))
    for name, p in donor.visual.attnpool.named_parameters():
        assert torch.equal(loaded.dense_pool.get_parameter(name), p)
    assert loaded.spec["pretrained"] == "none"


# ------------------------------------------------------------------------------------------ shapes, padding
def test_cris_shapes_and_padding_mask():
    torch.manual_seed(0)
    model = _tiny_cris().eval()
    texts = ["cat", "dining table next to a potted plant"]
    with torch.no_grad():
        for h, w in [(64, 64), (96, 80), (72, 100)]:
            x = torch.rand(2, 3, h, w)
            logits = model(x, texts)
            assert logits.shape == (2, 1, math.ceil(h / 4), math.ceil(w / 4))
            assert torch.isfinite(logits).all()
        tokens = model.tokenize(texts)
        assert (tokens[0] == 0).any()  # the short text is padded in this batch
        # A sample's logits do not depend on the padding its batch imposes...
        alone = model(x[:1], texts[:1])
        torch.testing.assert_close(logits[:1], alone, atol=1e-5, rtol=1e-5)
        # ... nor on extra padding tokens.
        padded = torch.cat([tokens, torch.zeros(2, 9, dtype=tokens.dtype)], 1)
        torch.testing.assert_close(model.forward_tokens(x, padded), logits, atol=1e-5, rtol=1e-5)
        # The text reaches the output.
        assert not torch.allclose(model(x, ["dog", "dog"]), logits, atol=1e-4)
        # Word features come straight from ln_final (text width), with the padding mask after EOT.
        words, pad, sentence = model.encode_text(tokens)
        assert words.shape == (2, tokens.shape[1], model.clip.ln_final.normalized_shape[0])
        assert pad.tolist() == (torch.arange(tokens.shape[1])[None] > tokens.argmax(-1)[:, None]).tolist()
        assert sentence.shape == (2, model.clip.text_projection.shape[1])
    # A decoder width other than the text width (cross-attention keys/values keep the word width).
    wide = _tiny_cris(dim=64, heads=4).eval()
    with torch.no_grad():
        assert wide(torch.rand(1, 3, 64, 64), ["cat"]).shape == (1, 1, 16, 16)


def test_published_layer_structure():
    model = _tiny_cris()
    clip = model.clip
    width = clip.visual.layer1[0].conv1.in_channels
    embed = clip.text_projection.shape[1]
    neck, dim = model.neck, model.dim
    # FPN widths (dim/2, dim, 2*dim): RN50 with dim 512 gives the published (256, 512, 1024).
    assert isinstance(neck.txt_proj[0], torch.nn.Linear) and neck.txt_proj[0].bias is None
    assert isinstance(neck.txt_proj[1], torch.nn.BatchNorm1d) and neck.txt_proj[0].out_features == 2 * dim
    assert neck.v5_proj[0].in_channels == model.dense_pool.output_dim == embed
    assert neck.v5_proj[0].kernel_size == (1, 1) and neck.v5_proj[0].out_channels == 2 * dim
    assert neck.v4_proj[0].in_channels == 16 * width and neck.v4_proj[0].kernel_size == (3, 3)
    assert neck.v3_proj[0].in_channels == 8 * width and neck.v3_proj[0].out_channels == dim // 2
    assert neck.f4_fuse[0].kernel_size == neck.f3_fuse[0].kernel_size == neck.aggregate[0].kernel_size == (1, 1)
    assert neck.coord_conv[0].in_channels == dim + 2
    layer = model.layers[0]
    ffn_norm = layer.ffn[3]
    assert isinstance(ffn_norm, torch.nn.LayerNorm) and ffn_norm.normalized_shape == (layer.ffn[0].out_features,)
    assert model.txt_proj.in_features == embed
    assert model.txt_proj.out_features == (dim // 2) * model.kernel_size ** 2 + 1
    # Published sine encodings: interleaved sin/cos; 2-D: x in the first half of the channels, y in the second.
    p1 = sine_positions_1d(5, 8, torch.device("cpu"))
    torch.testing.assert_close(p1[3, :2], torch.tensor([math.sin(3), math.cos(3)]))
    torch.testing.assert_close(p1[3, 2:4], torch.tensor([math.sin(3 / 10), math.cos(3 / 10)]))
    p2 = sine_positions_2d(3, 4, 16, torch.device("cpu"))
    row, col = 2, 1
    torch.testing.assert_close(p2[row * 4 + col, :8], sine_positions_1d(4, 8, p2.device)[col])
    torch.testing.assert_close(p2[row * 4 + col, 8:], sine_positions_1d(3, 8, p2.device)[row])


def test_param_groups_follow_the_published_split():
    model = _tiny_cris()
    groups = model.param_groups(backbone_lr_mult=0.1, lr=1e-4)
    assert [g["lr_mult"] for g in groups] == [0.1, 1.0, 1.0]
    assert [g["lr"] for g in groups] == pytest.approx([1e-5, 1e-4, 1e-4])
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("clip.") and "positional_embedding" not in names[id(p)]
               for p in groups[0]["params"])
    assert any("attnpool.connect" in names[id(p)] for p in groups[0]["params"])
    assert not any(names[id(p)].startswith("clip.") for p in groups[1]["params"])
    assert sorted(names[id(p)] for p in groups[2]["params"]) == [
        "clip.positional_embedding", "clip.visual.attnpool.positional_embedding"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == sum(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------ learning, round trip
def test_a_few_adam_steps_lower_the_text_to_pixel_loss():
    torch.manual_seed(0)
    model = _tiny_cris(dropout=0.0)
    x = torch.rand(2, 3, 64, 64)
    mask = torch.zeros(2, 64, 64, dtype=torch.long)
    mask[0, 8:40, 16:48] = 1
    mask[1, 30:60, 4:30] = 1
    mask[1, 0:4] = 255  # ignored
    texts = ["red ball", "green box"]
    opt = torch.optim.Adam(model.param_groups(backbone_lr_mult=0.1, lr=1e-3))
    model.train()
    losses = []
    for _ in range(8):
        loss = text_to_pixel_loss(model(x, texts), mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses  # measured: 0.98 -> 0.11
    # A training batch of one sentence works (BatchNorm1d on the sentence falls back to running statistics).
    loss = text_to_pixel_loss(model(x[:1], texts[:1]), mask[:1])
    loss.backward()
    assert torch.isfinite(loss)


def test_spec_round_trip_gives_identical_outputs():
    torch.manual_seed(0)
    model = _tiny_cris(prompt="a picture of {}", bg_threshold=0.3, kernel_size=1)
    model.train()
    with torch.no_grad():  # move the BN statistics (incl. the dense pool's residual branch) off their init
        model(torch.rand(3, 3, 64, 64), ["a", "b", "c"])
    spec = json.loads(json.dumps(model.spec))
    rebuilt = build_model(spec)
    missing, unexpected = rebuilt.load_state_dict(model.state_dict())
    assert not missing and not unexpected
    model.eval(), rebuilt.eval()
    x = torch.rand(2, 3, 80, 64)
    with torch.no_grad():
        assert torch.equal(model(x, ["cat", "dining table"]), rebuilt(x, ["cat", "dining table"]))
        assert torch.equal(model.class_maps(x, ["cat", "dog"]), rebuilt.class_maps(x, ["cat", "dog"]))
    assert rebuilt.prompt == "a picture of {}" and rebuilt.bg_threshold == 0.3 and rebuilt.kernel_size == 1
    assert torch.equal(rebuilt.dense_pool.connect[1].running_mean, model.dense_pool.connect[1].running_mean)
