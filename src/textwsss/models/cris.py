"""CRIS (Wang et al., CVPR 2022): CLIP-driven referring image segmentation, METHODS.md section 5.

  images ──CLIP ModifiedResNet──> F_v2 (1/8), F_v3 (1/16), F_v4 (1/32)
  texts  ──CLIP text encoder───> F_t (per-token word features, padding masked), F_s (EOT token, projected)
  neck:      F_v4 * proj(F_s) -> up to 1/16, fused with F_v3, then with F_v2 (strided to 1/16); the three
             levels aggregated, 2-D coordinates concatenated -> F_v (1/16)
  decoder:   N x [self-attention over pixels (+ sine positions), cross-attention pixels -> words
             (padding masked), FFN] -> F_c
  projector: z_v = conv(Up x4(F_c)) (C channels, 1/4 of the input); z_t = Linear(F_s) in R^(C*k*k+1), a
             per-sample k x k kernel plus bias; logits = dynamic conv of z_v with z_t -> (B,1,H/4,W/4)
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


def coord_features(batch: int, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(B,2,h,w) pixel-centre coordinates in [-1, 1] (x then y)."""
    ys = torch.linspace(-1, 1, h, device=device, dtype=dtype)
    xs = torch.linspace(-1, 1, w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])[None].expand(batch, -1, -1, -1)


def sine_positions_2d(h: int, w: int, dim: int, device: torch.device) -> Tensor:
    """(h*w, dim) fixed sine/cosine encoding: half the channels for y, half for x."""
    if dim % 4:
        raise ValueError(f"dim: the 2-D positional encoding needs a multiple of 4, got {dim}")
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    y = torch.arange(h, device=device, dtype=torch.float32)[:, None] * freq  # (h, q)
    x = torch.arange(w, device=device, dtype=torch.float32)[:, None] * freq  # (w, q)
    py = torch.cat([y.sin(), y.cos()], 1)[:, None, :].expand(h, w, 2 * quarter)
    px = torch.cat([x.sin(), x.cos()], 1)[None, :, :].expand(h, w, 2 * quarter)
    return torch.cat([py, px], 2).reshape(h * w, dim)


def sine_positions_1d(length: int, dim: int, device: torch.device) -> Tensor:
    half = dim // 2
    freq = 1.0 / (10000 ** (torch.arange(half, device=device, dtype=torch.float32) / max(half, 1)))
    p = torch.arange(length, device=device, dtype=torch.float32)[:, None] * freq
    return torch.cat([p.sin(), p.cos()], 1)[:, :dim]


class CrossModalNeck(nn.Module):
    """F_v2, F_v3, F_v4 and the sentence feature F_s -> multi-modal map F_v at 1/16 (dim channels)."""

    def __init__(self, in_channels: tuple[int, int, int], sentence_dim: int, dim: int):
        super().__init__()
        c2, c3, c4 = in_channels
        self.text_proj = nn.Linear(sentence_dim, dim)
        self.proj4 = nn.Sequential(nn.Conv2d(c4, dim, 1, bias=False), nn.BatchNorm2d(dim))
        self.norm4 = nn.Sequential(nn.BatchNorm2d(dim), nn.ReLU(inplace=True))
        self.proj3 = _conv_bn_relu(c3, dim, 1)
        self.fuse43 = _conv_bn_relu(2 * dim, dim, 3)
        self.proj2 = _conv_bn_relu(c2, dim, 3, stride=2)  # 1/8 -> 1/16
        self.fuse432 = _conv_bn_relu(2 * dim, dim, 3)
        self.aggregate = _conv_bn_relu(3 * dim, dim, 1)
        self.coord = _conv_bn_relu(dim + 2, dim, 3)

    def forward(self, v2: Tensor, v3: Tensor, v4: Tensor, sentence: Tensor) -> Tensor:
        size = v3.shape[-2:]
        f4 = self.norm4(self.proj4(v4) * self.text_proj(sentence)[:, :, None, None])  # element-wise product
        f4 = F.interpolate(f4, size=size, mode="bilinear", align_corners=False)
        f43 = self.fuse43(torch.cat([f4, self.proj3(v3)], 1))
        f2 = self.proj2(v2)
        if f2.shape[-2:] != size:  # odd sizes: the strided conv may round differently from CLIP's pooling
            f2 = F.interpolate(f2, size=size, mode="bilinear", align_corners=False)
        f432 = self.fuse432(torch.cat([f43, f2], 1))
        fm = self.aggregate(torch.cat([f4, f43, f432], 1))
        b, _, h, w = fm.shape
        return self.coord(torch.cat([fm, coord_features(b, h, w, fm.device, fm.dtype)], 1))


class DecoderLayer(nn.Module):
    """Pre-norm: self-attention over pixels, cross-attention pixels -> words, FFN; positions added to q/k."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, vis: Tensor, vis_pos: Tensor, words: Tensor, word_pos: Tensor, pad: Tensor) -> Tensor:
        q = self.norm1(vis)
        vis = vis + self.drop(self.self_attn(q + vis_pos, q + vis_pos, q, need_weights=False)[0])
        q = self.norm2(vis)
        vis = vis + self.drop(self.cross_attn(q + vis_pos, words + word_pos, words, key_padding_mask=pad,
                                              need_weights=False)[0])
        return vis + self.drop(self.ffn(self.norm3(vis)))


class CRIS(nn.Module):
    """CRIS on an open_clip CLIP with a ModifiedResNet vision tower (RN50, RN101, tiny-rn for tests).

    forward(images (B,3,H,W) RGB in [0,1], texts list of B concepts) -> logits (B,1,ceil(H/4),ceil(W/4)).
    CLIP normalisation is inside (persistent buffers). `bg_threshold` is the sigmoid level below which
    predict_semantic calls a pixel background.
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
        visual.attnpool = nn.Identity()  # the pooled CLIP embedding is not used; keep its weights out of training
        clip.logit_scale.requires_grad_(False)
        width = visual.layer1[0].conv1.in_channels  # ModifiedResNet 'width'
        v_channels = (width * 8, width * 16, width * 32)  # layer2/3/4 outputs (bottleneck expansion 4)
        text_width = clip.token_embedding.embedding_dim
        sentence_dim = clip.text_projection.shape[1] if isinstance(clip.text_projection, Tensor) \
            else clip.text_projection.out_features
        pp = visual.preprocess_cfg if hasattr(visual, "preprocess_cfg") else {}
        self.normalize = Normalize(tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                                   tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)))
        self.neck = CrossModalNeck(v_channels, sentence_dim, dim)
        self.word_proj = nn.Linear(text_width, dim)
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim, dropout) for _ in range(decoder_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        c = dim // 2
        self.vis_up1 = _conv_bn_relu(dim, dim, 3)
        self.vis_up2 = _conv_bn_relu(dim, c, 3)
        self.vis_out = nn.Conv2d(c, c, 1)
        self.txt_proj = nn.Sequential(nn.Linear(sentence_dim, dim), nn.ReLU(inplace=True),
                                      nn.Linear(dim, c * kernel_size * kernel_size + 1))
        self.kernel_size, self.proj_channels, self.dim = kernel_size, c, dim
        self.bg_threshold = float(bg_threshold)
        self.spec = {"type": "cris", "arch": arch, "pretrained": "none", "quick_gelu": bool(quick_gelu),
                     "prompt": prompt, "decoder_layers": decoder_layers, "heads": heads, "ffn_dim": ffn_dim,
                     "dim": dim, "kernel_size": kernel_size, "dropout": dropout, "bg_threshold": self.bg_threshold}

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
        v = self.clip.visual
        x = v.stem(self.normalize(images))
        v2 = v.layer2(v.layer1(x))
        v3 = v.layer3(v2)
        return v2, v3, v.layer4(v3)

    def encode_text(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(word features (B,L,dim), padding mask (B,L) True where padding, sentence feature (B,E))."""
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
        return self.word_proj(x), pad, sentence

    # ------------------------------------------------------------------------------------------ decoding
    def decode(self, feats: tuple[Tensor, Tensor, Tensor], words: Tensor, pad: Tensor, sentence: Tensor,
               out_size: tuple[int, int]) -> Tensor:
        """Logits (B,1,*out_size) for B aligned (image features, text) pairs."""
        fv = self.neck(*feats, sentence)
        b, d, h, w = fv.shape
        vis = fv.flatten(2).transpose(1, 2)  # (B, h*w, d)
        vis_pos = sine_positions_2d(h, w, d, fv.device).to(vis.dtype)[None]
        word_pos = sine_positions_1d(words.shape[1], d, fv.device).to(words.dtype)[None]
        for layer in self.layers:
            vis = layer(vis, vis_pos, words, word_pos, pad)
        fc = self.decoder_norm(vis).transpose(1, 2).reshape(b, d, h, w)
        z = self.vis_up1(F.interpolate(fc, scale_factor=2, mode="bilinear", align_corners=False))
        z = self.vis_up2(F.interpolate(z, size=out_size, mode="bilinear", align_corners=False))
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
        """CLIP encoders (lr_mult backbone_lr_mult, CRIS: 0.1) and the new layers (lr_mult 1)."""
        clip_ids = {id(p) for p in self.clip.parameters()}
        groups = [{"params": [p for p in self.clip.parameters() if p.requires_grad],
                   "lr_mult": float(backbone_lr_mult)},
                  {"params": [p for p in self.parameters() if id(p) not in clip_ids and p.requires_grad],
                   "lr_mult": 1.0}]
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
