"""CRIS (Wang et al., CVPR 2022): CLIP-driven referring image segmentation, METHODS.md section 5.
Follows the published code (DerrickWang005/CRIS.pytorch: model/clip.py, model/layers.py, model/segmenter.py).

  images ──CLIP ModifiedResNet──> v3 = layer2 (1/8), v4 = layer3 (1/16), v5 = CLIP's attention pool applied
           at every pixel of layer4 (1/32, output_dim channels: the text-aligned embedding space; positional
           embedding resized bicubically to the map) + a 1x1 conv/BN residual branch of layer4, then ReLU
  texts  ──CLIP text encoder───> F_t = ln_final word features (B,L,text width; padding masked),
           F_s = EOT feature @ text_projection (B,E)
  neck (FPN, widths C/2, C, 2C):  f5 = BN-ReLU(conv1x1(v5) * Linear-BN-ReLU(F_s)); f4 = conv1x1[conv3x3(v4),
           up2(f5)]; f3 = conv1x1[avgpool2(conv3x3(v3)), f4]; the three levels through 3x3 convs, f5 up x2,
           concatenated, 1x1 aggregation, CoordConv 3x3 + conv 3x3 -> F_v (C channels, 1/16)
  decoder: N x pre-norm [self-attention over pixels (sine positions on q/k) -> LayerNorm -> residual;
           cross-attention pixels -> words (padding masked, sine positions on q/k) -> LayerNorm -> residual;
           FFN Linear-ReLU-Dropout-LayerNorm-Linear -> residual], final LayerNorm -> F_c
  projector: z_v = conv1x1(conv3x3(up2(conv3x3(up2(F_c))))) (C/2 channels, 1/4 of the input);
           z_t = Linear(F_s) in R^(C/2*k*k+1), a per-sample k x k kernel plus bias;
           logits = dynamic conv of z_v with z_t -> (B,1,H/4,W/4)
Training: sigmoid(logits) vs the binary mask, binary cross-entropy (losses.segmentation.text_to_pixel_loss).

Texts are concepts: the prompt template (e.g. 'a photo of a {}.') is applied inside; use '{}' for raw
referring expressions. Weights are never downloaded: a missing checkpoint raises RuntimeError naming the
architecture, the tag and the file to provide.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import Tensor, nn

from .backbones import Normalize

log = logging.getLogger(__name__)


def _conv_bn_relu(cin: int, cout: int, k: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


def _resize(x: Tensor, size) -> Tensor:
    """Bilinear resize (align_corners False, as the published x2 upsampling); a no-op at the same size."""
    size = tuple(size)
    return x if tuple(x.shape[-2:]) == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def coord_features(batch: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(B,2,h,w) pixel-centre coordinates in [-1, 1] (x then y)."""
    ys = torch.linspace(-1, 1, h, device=device, dtype=dtype)
    xs = torch.linspace(-1, 1, w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])[None].expand(batch, -1, -1, -1)


def _sincos(positions: Tensor, dim: int) -> Tensor:
    """(n, dim) transformer encoding of n positions: channel 2i = sin(p * 10000^(-2i/dim)), 2i+1 = cos(...)."""
    if dim % 2:
        raise ValueError(f"dim: the sine/cosine encoding needs an even width, got {dim}")
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) * (-math.log(1e4) / dim))
    angle = positions.float()[:, None] * freq[None]
    return torch.stack([angle.sin(), angle.cos()], -1).reshape(len(positions), dim)


def sine_positions_2d(h: int, w: int, dim: int, device: torch.device) -> Tensor:
    """(h*w, dim) fixed encoding, rows in raster order: the first dim/2 channels encode x (the column), the
    last dim/2 the row y, each with `_sincos` at width dim/2 (the published pos2d)."""
    if dim % 4:
        raise ValueError(f"dim: the 2-D positional encoding needs a multiple of 4, got {dim}")
    ex = _sincos(torch.arange(w, device=device), dim // 2)  # (w, dim/2)
    ey = _sincos(torch.arange(h, device=device), dim // 2)  # (h, dim/2)
    return torch.cat([ex[None].expand(h, -1, -1), ey[:, None].expand(-1, w, -1)], 2).reshape(h * w, dim)


def sine_positions_1d(length: int, dim: int, device: torch.device) -> Tensor:
    """(length, dim) fixed encoding of word positions (the published pos1d)."""
    return _sincos(torch.arange(length, device=device), dim)


class _SentenceBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d on sentence features. A training batch of one sentence has no batch statistics (plain
    BatchNorm1d raises); it is then normalised with the running statistics, left unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class DenseAttentionPool(nn.Module):
    """CLIP's attention pool applied at every pixel (CRIS's v5), replacing `visual.attnpool` in place.

    It takes over the very Parameter/Linear objects of open_clip's AttentionPool2d (positional_embedding,
    q/k/v/c_proj: a CLIP checkpoint loaded into the tower is what this module computes with, and the state
    dict keys stay `visual.attnpool.*`), and adds the published residual branch `connect` (1x1 conv, no bias,
    + BatchNorm, embed_dim -> output_dim, newly initialised).

    forward(x (B,embed_dim,h,w)) -> relu(attention(x) + connect(x)) (B,output_dim,h,w): every pixel token
    (plus its positional embedding; the spatial part bicubically resized to (h,w)) attends to all pixel
    tokens, as the published code (no mean token). with_global=True also returns CLIP's pooled embedding
    (B,output_dim): the mean token (plus the class positional embedding) attending to itself and every pixel,
    which is exactly open_clip's AttentionPool2d output at the native size; pixel queries never see it.
    """

    def __init__(self, pool: nn.Module):
        super().__init__()
        self.positional_embedding = pool.positional_embedding  # the same Parameter objects
        self.k_proj, self.q_proj, self.v_proj, self.c_proj = pool.k_proj, pool.q_proj, pool.v_proj, pool.c_proj
        self.num_heads = int(pool.num_heads)
        embed_dim, output_dim = self.c_proj.in_features, self.c_proj.out_features
        if embed_dim % self.num_heads:
            raise ValueError(f"attnpool: {embed_dim} channels are not divisible by {self.num_heads} heads")
        self.grid = round(math.sqrt(self.positional_embedding.shape[0] - 1))
        if self.grid ** 2 + 1 != self.positional_embedding.shape[0]:
            raise ValueError(f"attnpool: positional embedding of {self.positional_embedding.shape[0]} rows is "
                             f"not 1 + a square grid")
        self.connect = nn.Sequential(nn.Conv2d(embed_dim, output_dim, 1, bias=False), nn.BatchNorm2d(output_dim))
        self.output_dim = output_dim

    def spatial_positions(self, h: int, w: int) -> Tensor:
        """(h*w, embed_dim): the grid part of the positional embedding, bicubically resized to (h, w)."""
        pos = self.positional_embedding[1:]
        if (h, w) == (self.grid, self.grid):
            return pos  # bicubic resampling at the same size is the identity
        grid = pos.reshape(self.grid, self.grid, -1).permute(2, 0, 1)[None]
        grid = F.interpolate(grid.float(), size=(h, w), mode="bicubic", align_corners=False).to(pos.dtype)
        return grid[0].flatten(1).transpose(0, 1)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x: Tensor, with_global: bool = False):
        b, c, h, w = x.shape
        residual = self.connect(x)
        tokens = x.flatten(2).transpose(1, 2) + self.spatial_positions(h, w).to(x.dtype)[None]  # (B, hw, C)
        mask = None
        if with_global:
            mean = x.mean((2, 3))[:, None] + self.positional_embedding[:1].to(x.dtype)[None]
            tokens = torch.cat([mean, tokens], 1)
            mask = torch.ones(h * w + 1, h * w + 1, dtype=torch.bool, device=x.device)
            mask[1:, 0] = False  # pixels attend to pixels only (True = may attend)
        q, k, v = (self._heads(proj(tokens)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out = self.c_proj(out.transpose(1, 2).reshape(b, tokens.shape[1], c))  # (B, N, output_dim)
        dense = out[:, -h * w:].transpose(1, 2).reshape(b, -1, h, w)
        dense = F.relu(dense + residual)
        return (dense, out[:, 0]) if with_global else dense


class CrossModalFPN(nn.Module):
    """The published multi-modal FPN: (v3, v4, v5, F_s) -> F_v at the v4 size (1/16), `widths[1]` channels.

    in_channels: (v3, v4, v5) channels (RN50: 512, 1024, 1024); widths: the published fpn_out (RN50: 256, 512,
    1024); sentence_dim: F_s channels (RN50: 1024)."""

    def __init__(self, in_channels: tuple[int, int, int], widths: tuple[int, int, int], sentence_dim: int):
        super().__init__()
        c3, c4, c5 = in_channels
        w3, w4, w5 = widths
        self.txt_proj = nn.Sequential(nn.Linear(sentence_dim, w5, bias=False), _SentenceBatchNorm(w5),
                                      nn.ReLU(inplace=True))
        self.v5_proj = _conv_bn_relu(c5, w5, 1)
        self.v5_norm = nn.Sequential(nn.BatchNorm2d(w5), nn.ReLU(inplace=True))
        self.v4_proj = _conv_bn_relu(c4, w4, 3)
        self.f4_fuse = _conv_bn_relu(w4 + w5, w4, 1)
        self.v3_proj = _conv_bn_relu(c3, w3, 3)
        self.f3_fuse = _conv_bn_relu(w3 + w4, w4, 1)
        self.q5 = _conv_bn_relu(w5, w4, 3)
        self.q4 = _conv_bn_relu(w4, w4, 3)
        self.q3 = _conv_bn_relu(w4, w4, 3)
        self.aggregate = _conv_bn_relu(3 * w4, w4, 1)
        self.coord_conv = _conv_bn_relu(w4 + 2, w4, 3)
        self.out_conv = _conv_bn_relu(w4, w4, 3)

    def forward(self, v3: Tensor, v4: Tensor, v5: Tensor, sentence: Tensor) -> Tensor:
        size = v4.shape[-2:]
        # Visual-text fusion at 1/32: element-wise product with the projected sentence.
        f5 = self.v5_norm(self.v5_proj(v5) * self.txt_proj(sentence)[:, :, None, None])
        f4 = self.f4_fuse(torch.cat([self.v4_proj(v4), _resize(f5, size)], 1))
        f3 = _resize(F.avg_pool2d(self.v3_proj(v3), 2, 2), size)
        f3 = self.f3_fuse(torch.cat([f3, f4], 1))
        fq = self.aggregate(torch.cat([self.q3(f3), self.q4(f4), _resize(self.q5(f5), size)], 1))
        b, _, h, w = fq.shape
        fq = self.coord_conv(torch.cat([fq, coord_features(b, h, w, fq.device, fq.dtype)], 1))
        return self.out_conv(fq)


class DecoderLayer(nn.Module):
    """The published decoder layer (pre-norm, plus a LayerNorm on each attention output and inside the FFN):
    vis += LN(SelfAttn(q=k=LN1(vis)+pos, v=LN1(vis))); vis += LN(CrossAttn(q=LN2(vis)+pos, k=words+word_pos,
    v=words, padding masked)); vis += FFN(LN3(vis)) with FFN = Linear-ReLU-Dropout-LayerNorm(ffn)-Linear.
    word_dim: width of the word features (the keys/values; the published model has word_dim == dim)."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float, word_dim: int | None = None):
        super().__init__()
        word_dim = word_dim or dim
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, kdim=word_dim, vdim=word_dim,
                                                batch_first=True)
        self.self_attn_norm, self.cross_attn_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.LayerNorm(ffn_dim), nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop1, self.drop2, self.drop3 = nn.Dropout(dropout), nn.Dropout(dropout), nn.Dropout(dropout)

    def forward(self, vis: Tensor, vis_pos: Tensor, words: Tensor, word_pos: Tensor, pad: Tensor) -> Tensor:
        q = self.norm1(vis)
        a = self.self_attn(q + vis_pos, q + vis_pos, q, need_weights=False)[0]
        vis = vis + self.drop1(self.self_attn_norm(a))
        q = self.norm2(vis)
        a = self.cross_attn(q + vis_pos, words + word_pos, words, key_padding_mask=pad, need_weights=False)[0]
        vis = vis + self.drop2(self.cross_attn_norm(a))
        return vis + self.drop3(self.ffn(self.norm3(vis)))


class CRIS(nn.Module):
    """CRIS on an open_clip CLIP with a ModifiedResNet vision tower (RN50, RN101, tiny-rn for tests).

    forward(images (B,3,H,W) RGB in [0,1], texts list of B concepts) -> logits (B,1,ceil(H/4),ceil(W/4)).
    CLIP normalisation is inside (persistent buffers). `bg_threshold` is the sigmoid level below which
    predict_semantic calls a pixel background.

    Widths follow the published RN50 model with dim = vis_dim (512): FPN widths (dim/2, dim, 2*dim) =
    (256, 512, 1024), pixel embedding dim/2 = 256 channels; the input channels (layer2, layer3, attention-pool
    output), the sentence width and the word width come from the CLIP model.
    """

    def __init__(self, clip: nn.Module, tokenizer, *, arch: str, quick_gelu: bool = False,
                 prompt: str = "a photo of a {}.", decoder_layers: int = 3, heads: int = 8, ffn_dim: int = 2048,
                 dim: int = 512, kernel_size: int = 3, dropout: float = 0.1, bg_threshold: float = 0.35):
        super().__init__()
        visual = getattr(clip, "visual", None)
        if not isinstance(visual, open_clip.modified_resnet.ModifiedResNet):
            raise ValueError(f"arch: CRIS needs an open_clip CLIP with a ModifiedResNet vision tower (RN50, RN101, "
                             f"...); '{arch}' has {type(visual).__name__}")
        if "{}" not in prompt:
            raise ValueError(f"prompt: expected a template containing '{{}}', got {prompt!r}")
        if dim % heads or dim % 4:
            raise ValueError(f"dim: expected a multiple of heads ({heads}) and of 4, got {dim}")
        if kernel_size % 2 == 0 or decoder_layers < 1:
            raise ValueError(f"kernel_size must be odd and decoder_layers >= 1, got {kernel_size}, {decoder_layers}")
        self.clip, self.tokenizer, self.prompt = clip, tokenizer, prompt
        if not isinstance(visual.attnpool, DenseAttentionPool):
            visual.attnpool = DenseAttentionPool(visual.attnpool)  # same pretrained tensors, applied per pixel
        clip.logit_scale.requires_grad_(False)
        width = visual.layer1[0].conv1.in_channels  # ModifiedResNet 'width'
        v_channels = (width * 8, width * 16, visual.attnpool.output_dim)  # layer2, layer3, dense attention pool
        text_width = clip.token_embedding.embedding_dim
        sentence_dim = clip.text_projection.shape[1] if isinstance(clip.text_projection, Tensor) \
            else clip.text_projection.out_features
        pp = visual.preprocess_cfg if hasattr(visual, "preprocess_cfg") else {}
        self.normalize = Normalize(tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                                   tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)))
        self.neck = CrossModalFPN(v_channels, (dim // 2, dim, 2 * dim), sentence_dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim, dropout, text_width)
                                    for _ in range(decoder_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        c = dim // 2
        self.vis_up1 = _conv_bn_relu(dim, dim, 3)
        self.vis_up2 = _conv_bn_relu(dim, c, 3)
        self.vis_out = nn.Conv2d(c, c, 1)
        self.txt_proj = nn.Linear(sentence_dim, c * kernel_size * kernel_size + 1)
        self.kernel_size, self.proj_channels, self.dim = kernel_size, c, dim
        self.bg_threshold = float(bg_threshold)
        self.spec = {"type": "cris", "arch": arch, "pretrained": "none", "quick_gelu": bool(quick_gelu),
                     "prompt": prompt, "decoder_layers": decoder_layers, "heads": heads, "ffn_dim": ffn_dim,
                     "dim": dim, "kernel_size": kernel_size, "dropout": dropout, "bg_threshold": self.bg_threshold}

    @property
    def dense_pool(self) -> DenseAttentionPool:
        return self.clip.visual.attnpool

    # ------------------------------------------------------------------------------------------ encoders
    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """Prompted, tokenised texts (B,L), trimmed after the longest end-of-text token (the trimmed tail is
        padding: causal attention means it never changes the real tokens' features)."""
        if isinstance(texts, str) or not len(texts):
            raise ValueError("texts: expected a non-empty list of strings")
        tokens = self.tokenizer([self.prompt.format(t) for t in texts])
        length = int(tokens.argmax(-1).max()) + 1  # EOT has the highest id in CLIP's vocabulary
        return tokens[:, :length]

    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(v3 = layer2 (1/8), v4 = layer3 (1/16), v5 = dense attention pool of layer4 (1/32, output_dim))."""
        v = self.clip.visual
        x = v.stem(self.normalize(images))
        v3 = v.layer2(v.layer1(x))
        v4 = v.layer3(v3)
        return v3, v4, v.attnpool(v.layer4(v4))

    def encode_text(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(word features (B,L,text width) straight from ln_final, padding mask (B,L) True after the EOT token,
        sentence feature (B,E) = EOT feature @ text_projection)."""
        clip = self.clip
        length = tokens.shape[1]
        if length > clip.positional_embedding.shape[0]:
            raise ValueError(f"tokens: at most {clip.positional_embedding.shape[0]} tokens, got {length}")
        x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
        mask = None if clip.attn_mask is None else clip.attn_mask[:length, :length]
        x = clip.transformer(x, attn_mask=mask)
        x = clip.ln_final(x)
        sentence = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
        sentence = clip.text_projection(sentence) if isinstance(clip.text_projection, nn.Linear) \
            else sentence @ clip.text_projection
        eot = tokens.argmax(-1)
        pad = torch.arange(length, device=tokens.device)[None] > eot[:, None]
        return x, pad, sentence

    # ------------------------------------------------------------------------------------------ decoding
    def decode(self, feats: tuple[Tensor, Tensor, Tensor], words: Tensor, pad: Tensor, sentence: Tensor,
               out_size: tuple[int, int]) -> Tensor:
        """Logits (B,1,*out_size) for B aligned (image features, text) pairs."""
        fv = self.neck(*feats, sentence)
        b, d, h, w = fv.shape
        vis = fv.flatten(2).transpose(1, 2)  # (B, h*w, d)
        vis_pos = sine_positions_2d(h, w, d, fv.device).to(vis.dtype)[None]
        word_pos = sine_positions_1d(words.shape[1], words.shape[2], fv.device).to(words.dtype)[None]
        for layer in self.layers:
            vis = layer(vis, vis_pos, words, word_pos, pad)
        fc = self.decoder_norm(vis).transpose(1, 2).reshape(b, d, h, w)
        z = self.vis_up1(_resize(fc, (2 * h, 2 * w)))
        z = self.vis_up2(_resize(z, out_size))
        z_v = self.vis_out(z)  # (B, C, H/4, W/4)
        z_t = self.txt_proj(sentence)  # (B, C*k*k + 1)
        k, c = self.kernel_size, self.proj_channels
        weight = z_t[:, :-1].reshape(b, c, k, k)
        # One grouped conv applies each sample's own kernel to its own map.
        out = F.conv2d(z_v.reshape(1, b * c, *out_size), weight, bias=z_t[:, -1], padding=k // 2, groups=b)
        return out.reshape(b, 1, *out_size)

    @staticmethod
    def output_size(images: Tensor) -> tuple[int, int]:
        return math.ceil(images.shape[-2] / 4), math.ceil(images.shape[-1] / 4)

    def forward_tokens(self, images: Tensor, tokens: Tensor) -> Tensor:
        if images.shape[0] != tokens.shape[0]:
            raise ValueError(f"tokens: expected one row per image ({images.shape[0]}), got {tokens.shape[0]}")
        words, pad, sentence = self.encode_text(tokens.to(images.device))
        return self.decode(self.encode_image(images), words, pad, sentence, self.output_size(images))

    def forward(self, images: Tensor, texts: Sequence[str]) -> Tensor:
        if len(texts) != images.shape[0]:
            raise ValueError(f"texts: expected one text per image ({images.shape[0]}), got {len(texts)}")
        return self.forward_tokens(images, self.tokenize(texts))

    # ------------------------------------------------------------------------------------------ inference
    def class_maps(self, images: Tensor, class_concepts: Sequence[str], chunk: int = 16) -> Tensor:
        """(B,K,ceil(H/4),ceil(W/4)) sigmoid maps of every class prompt on every image. Each image and each
        prompt is encoded once; only the neck, decoder and projector run per (image, class) pair, in chunks
        of `chunk` pairs to bound memory."""
        b, k = images.shape[0], len(class_concepts)
        feats = self.encode_image(images)
        words, pad, sentence = self.encode_text(self.tokenize(class_concepts).to(images.device))
        out_size = self.output_size(images)
        pairs = [(i, j) for i in range(b) for j in range(k)]
        maps = []
        for start in range(0, len(pairs), chunk):
            ii = torch.tensor([p[0] for p in pairs[start:start + chunk]], device=images.device)
            jj = torch.tensor([p[1] for p in pairs[start:start + chunk]], device=images.device)
            logits = self.decode(tuple(f[ii] for f in feats), words[jj], pad[jj], sentence[jj], out_size)
            maps.append(torch.sigmoid(logits[:, 0]))
        return torch.cat(maps).reshape(b, k, *out_size)

    @torch.no_grad()
    def predict_semantic(self, images: Tensor, class_concepts: Sequence[str], bg_threshold: float | None = None,
                         present: Tensor | None = None) -> Tensor:
        """(B,H,W) long labels: 0 background, k+1 for class_concepts[k]. Argmax of the class sigmoid maps
        (upsampled to the image size); background where the best score is below bg_threshold (default: the
        model's). present: optional (B,K) bool mask restricting each image to the given classes."""
        thr = self.bg_threshold if bg_threshold is None else float(bg_threshold)
        maps = F.interpolate(self.class_maps(images, class_concepts), size=images.shape[-2:], mode="bilinear",
                             align_corners=False)
        if present is not None:
            if present.shape != maps.shape[:2]:
                raise ValueError(f"present: expected shape {tuple(maps.shape[:2])}, got {tuple(present.shape)}")
            maps = maps.masked_fill(~present.to(maps.device, torch.bool)[:, :, None, None], 0.0)
        best, idx = maps.max(1)
        return torch.where(best >= thr, idx + 1, torch.zeros_like(idx))

    def param_groups(self, backbone_lr_mult: float = 0.1, lr: float | None = None) -> list[dict]:
        """The published split: CLIP (both encoders, the dense pool and its residual branch; lr_mult
        backbone_lr_mult, CRIS: 0.1), the new layers (lr_mult 1) and, as a third group also at lr_mult 1, CLIP's
        positional embeddings (text and attention pool: the published code trains every parameter whose name
        contains 'positional_embedding' at the head's learning rate)."""
        clip_named = [(n, p) for n, p in self.clip.named_parameters() if p.requires_grad]
        clip_ids = {id(p) for p in self.clip.parameters()}
        groups = [{"params": [p for n, p in clip_named if "positional_embedding" not in n],
                   "lr_mult": float(backbone_lr_mult)},
                  {"params": [p for p in self.parameters() if id(p) not in clip_ids and p.requires_grad],
                   "lr_mult": 1.0},
                  {"params": [p for n, p in clip_named if "positional_embedding" in n], "lr_mult": 1.0}]
        groups = groups[:2] + [g for g in groups[2:] if g["params"]]
        if lr is not None:
            for g in groups:
                g["lr"] = lr * g["lr_mult"]
        return groups


def create_clip(arch: str, pretrained: str | None, quick_gelu: bool | None = None) -> tuple[nn.Module, object, bool]:
    """(open_clip CLIP model, tokenizer, quick_gelu) without any download.

    pretrained: an open_clip tag whose weights are already cached, a local checkpoint path, or 'none'.
    quick_gelu: force QuickGELU on/off; None: as the pretrained tag's config says.
    """
    from textwsss.guide.open_clip_matcher import resolve_checkpoint

    if arch not in open_clip.list_models():
        raise ValueError(f"arch: unknown open_clip architecture '{arch}'")
    try:
        checkpoint, tag_cfg = resolve_checkpoint(arch, pretrained)
    except RuntimeError as err:
        raise RuntimeError(f"CRIS: {err} (for CRIS the knob is seg.cris.pretrained: a local path or 'none')") from err
    if quick_gelu is None:
        quick_gelu = bool(tag_cfg.get("quick_gelu"))
    kwargs: dict = {"force_quick_gelu": True} if quick_gelu else {}
    clip = open_clip.create_model(arch, pretrained=checkpoint, **kwargs)
    return clip, open_clip.get_tokenizer(arch), quick_gelu
