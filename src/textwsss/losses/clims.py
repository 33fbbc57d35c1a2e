"""CLIMS losses (Xie et al., CVPR 2022): text-driven supervision of sigmoid activation maps.

For every present (image b, class k) pair, the map P_k and the image are resized to the matcher's
input size; the foreground X*P_k and background X*(1-P_k) are scored against concepts by a frozen
matcher (all of them batched into as few encode_images calls as `max_images_per_call` allows):
- OTM = -sum_k y_k log s(fg_k, text_k)                        the object region matches its label
- BTM = -sum_k y_k log(1 - s(bg_k, text_k))                   the rest of the image does not
- CBS = -sum_k sum_l y_k [s > thr] log(1 - s(fg_k, word_l))   the object region does not match
                                                              co-occurring background words
- REG = mean of P over the whole batch, all K channels, h, w (the paper's REG: keeps maps small;
        absent classes are included on purpose, so their maps are pushed to zero too)
Batch reduction (`reduction`):
- 'official' (the public code's clip_loss.py, which the published weights were tuned with): OTM and BTM
  are the mean over all present (image, class) pairs of the batch; CBS is the plain sum over pairs x
  background words above the threshold (no division);
- 'per_image': every term summed over the classes of an image, then averaged over the B images.
total = alpha*OTM + beta*BTM + gamma*CBS + delta*REG.

What the matcher sees (`input_mode`): 'clip' (default here) masks the [0,1] image by the map and lets the
matcher normalise it (masked-out pixels are black); 'official' masks the ImageNet-normalised image, as the
public code does, and feeds that to the matcher as it is (masked-out pixels are the mean colour, and CLIP gets
ImageNet's statistics instead of its own).

Resizing to the matcher (`align_corners`): the maps and the image are resized bilinearly; the public
train_clims.py uses align_corners=True (corner pixels aligned), F.interpolate's default is False (pixel areas
aligned). The two differ most where the maps are small (32 x 32 maps to a 224 input).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from textwsss.guide.base import SIM_MAX, SIM_MIN, Matcher


def _background_words(background_concepts: Sequence[str] | Mapping[str, Sequence[str]],
                      class_concepts: Sequence[str]) -> tuple[list[str], Tensor]:
    """All background words and a (K, L) bool table: may word l penalise class k?"""
    k_count = len(class_concepts)
    if isinstance(background_concepts, Mapping):
        words = list(dict.fromkeys(w for ws in background_concepts.values() for w in ws))
        allowed = torch.zeros(k_count, len(words), dtype=torch.bool)
        unknown = sorted(set(background_concepts) - set(class_concepts))
        if unknown:
            raise ValueError(f"background_concepts: keys {unknown} are not class concepts {list(class_concepts)}")
        for k, name in enumerate(class_concepts):
            for w in background_concepts.get(name, ()):
                allowed[k, words.index(w)] = True
        return words, allowed
    if isinstance(background_concepts, str):
        raise ValueError("background_concepts: expected a list of words or a mapping, got a single string")
    words = list(background_concepts)
    return words, torch.ones(k_count, len(words), dtype=torch.bool)


REDUCTIONS = ("official", "per_image")
INPUT_MODES = ("clip", "official")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _per_image_mean(values: Tensor, image_index: Tensor, batch: int) -> Tensor:
    """Sum the per-pair values of each image, then average over the B images."""
    per_image = torch.zeros(batch, dtype=values.dtype, device=values.device).index_add(0, image_index, values)
    return per_image.mean()


def _imagenet_normalised(images: Tensor) -> Tensor:
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def clims_loss(maps: Tensor, images: Tensor, labels: Tensor, matcher: Matcher, class_concepts: Sequence[str],
               background_concepts: Sequence[str] | Mapping[str, Sequence[str]], *, alpha: float = 10.0,
               beta: float = 24.0, gamma: float = 1.0, delta: float = 0.2, cbs_threshold: float = 0.26,
               class_weights: Tensor | None = None, max_images_per_call: int = 0, reduction: str = "official",
               input_mode: str = "clip", align_corners: bool = False) -> dict[str, Tensor]:
    """CLIMS loss terms and their weighted total.

    maps: (B,K,h,w) sigmoid activation maps in [0,1]; images: (B,3,H,W) RGB in [0,1];
    labels: (B,K) multi-hot; class_concepts: K concept names given to the matcher (e.g. readable
    VOC names); background_concepts: one shared word list, or {class name: words} (classes missing
    from the mapping get no CBS term). alpha/beta/gamma/delta weight OTM/BTM/CBS/REG (CLIMS VOC
    defaults 10/24/1/0.2); cbs_threshold: a (class, word) pair counts in CBS only where its
    similarity exceeds it (0.26 on VOC in the public code; 0 counts every pair); class_weights:
    optional (K,) factors on the per-class OTM and BTM terms; max_images_per_call: the 2P masked images
    go through the matcher in calls of at most this many (0: one call; a GPU wants one call, a CPU
    calls of ~8 images, whose activations stay in its caches). The result does not depend on it.
    reduction: 'official' or 'per_image'; input_mode: 'clip' or 'official'; align_corners: of the bilinear
    resizing of maps and images to the matcher's input (True: the public code) (module docstring).
    Returns {'otm', 'btm', 'cbs', 'reg', 'total'} (scalars).
    """
    if maps.ndim != 4:
        raise ValueError(f"maps: expected (B,K,h,w), got shape {tuple(maps.shape)}")
    batch, k_count = maps.shape[:2]
    if labels.shape != (batch, k_count):
        raise ValueError(f"labels: expected shape ({batch}, {k_count}), got {tuple(labels.shape)}")
    if images.ndim != 4 or images.shape[0] != batch or images.shape[1] != 3:
        raise ValueError(f"images: expected ({batch},3,H,W), got {tuple(images.shape)}")
    if len(class_concepts) != k_count:
        raise ValueError(f"class_concepts: expected {k_count} names (one per map channel), got {len(class_concepts)}")
    if max_images_per_call < 0:
        raise ValueError(f"max_images_per_call: expected 0 (one call) or a positive count, got {max_images_per_call}")
    if class_weights is not None and class_weights.shape != (k_count,):
        raise ValueError(f"class_weights: expected shape ({k_count},), got {tuple(class_weights.shape)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if input_mode not in INPUT_MODES:
        raise ValueError(f"input_mode: expected one of {INPUT_MODES}, got {input_mode!r}")

    reg = maps.mean()
    zero = maps.sum() * 0.0  # keeps the graph (and dtype/device) when no term applies
    image_index, class_index = torch.nonzero(labels > 0.5, as_tuple=True)
    if image_index.numel() == 0:
        total = delta * reg
        return {"otm": zero, "btm": zero, "cbs": zero, "reg": reg, "total": total}

    size = (matcher.input_size, matcher.input_size)
    pair_maps = F.interpolate(maps[image_index, class_index].unsqueeze(1), size=size, mode="bilinear",
                              align_corners=align_corners)
    pair_images = F.interpolate(images, size=size, mode="bilinear", align_corners=align_corners)[image_index]
    pair_images = pair_images.to(pair_maps.dtype)
    if input_mode == "official":
        pair_images = _imagenet_normalised(pair_images)
    n_pairs = pair_maps.shape[0]
    # Every foreground and background of the batch in one stack, encoded in as few calls as allowed.
    masked = torch.cat([pair_images * pair_maps, pair_images * (1.0 - pair_maps)])
    per_call = max_images_per_call or masked.shape[0]
    encode = matcher.encode_images if input_mode == "clip" else matcher.encode_prenormalised
    feats = torch.cat([encode(chunk) for chunk in masked.split(per_call)])

    words, allowed = _background_words(background_concepts, class_concepts)
    concept_feats = matcher.encode_concepts(list(class_concepts) + words)
    sim = matcher.similarity(feats, concept_feats).clamp(SIM_MIN, SIM_MAX)
    rows = torch.arange(n_pairs, device=sim.device)
    class_index_dev = class_index.to(sim.device)
    s_fg = sim[:n_pairs][rows, class_index_dev]
    s_bg = sim[n_pairs:][rows, class_index_dev]

    weights = class_weights.to(sim.device, sim.dtype)[class_index_dev] if class_weights is not None else 1.0
    image_index_dev = image_index.to(sim.device)
    otm_pairs = -weights * torch.log(s_fg)
    btm_pairs = -weights * torch.log(1.0 - s_bg)
    if words:
        s_words = sim[:n_pairs, k_count:]
        counted = (s_words > cbs_threshold) & allowed.to(sim.device)[class_index_dev]
        cbs_pairs = (-torch.log(1.0 - s_words) * counted).sum(dim=1)
    if reduction == "official":
        otm, btm = otm_pairs.mean(), btm_pairs.mean()
        cbs = cbs_pairs.sum() if words else zero
    else:
        otm = _per_image_mean(otm_pairs, image_index_dev, batch)
        btm = _per_image_mean(btm_pairs, image_index_dev, batch)
        cbs = _per_image_mean(cbs_pairs, image_index_dev, batch) if words else zero
    total = alpha * otm + beta * btm + gamma * cbs + delta * reg
    return {"otm": otm, "btm": btm, "cbs": cbs, "reg": reg, "total": total}


def bce_loss(logits_map: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Plain CAM baseline: global average pooling of the pre-sigmoid maps (B,K,h,w), then binary
    cross-entropy against the (B,K) multi-hot labels, averaged over B*K. Returns {'bce', 'total'}."""
    if logits_map.ndim != 4 or labels.shape != logits_map.shape[:2]:
        raise ValueError(f"logits_map (B,K,h,w) and labels (B,K) disagree: {tuple(logits_map.shape)} vs "
                         f"{tuple(labels.shape)}")
    pooled = logits_map.mean(dim=(2, 3))
    bce = F.binary_cross_entropy_with_logits(pooled, labels.to(pooled.dtype))
    return {"bce": bce, "total": bce}
