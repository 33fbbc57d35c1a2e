"""Dense zero-shot baseline (CLIP-ES style GradCAM on a frozen matcher, METHODS.md section 7).

For one image with known image-level classes: score the image against [its classes + background
words] with the matcher's logits, take a softmax over those concepts (so a class only wins where it
beats the background words and the other present classes), and run GradCAM of each class's
softmax probability on the matcher's feature map (`Matcher.gradcam_features`): channel weights =
spatial mean of the gradient, CAM = ReLU(sum_c w_c A_c), upsampled to the image size and
normalised per class by its maximum.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from textwsss.guide.base import Matcher


def zeroshot_cams(matcher: Matcher, image: np.ndarray, class_indices: Sequence[int], class_concepts: Sequence[str],
                  background_concepts: Sequence[str]) -> np.ndarray:
    """(len(class_indices), H, W) float32 CAMs in [0,1] for `image` (H,W,3) uint8.

    class_indices: indices into class_concepts of the classes present in the image;
    class_concepts: concept name of every class (e.g. readable VOC names);
    background_concepts: background words competing in the softmax (may be empty).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 (H,W,3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    indices = [int(i) for i in class_indices]
    bad = [i for i in indices if not 0 <= i < len(class_concepts)]
    if bad:
        raise ValueError(f"class_indices: {bad} out of range for {len(class_concepts)} class concepts")
    if not indices:
        return np.zeros((0, height, width), dtype=np.float32)
    concepts = [class_concepts[i] for i in indices] + list(background_concepts)
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255.0).to(matcher.device)
    # The matcher is frozen, so the graph only exists when the input asks for gradients.
    pixels.requires_grad_(True)
    with torch.enable_grad():
        fmap, feats = matcher.gradcam_features(pixels)
        probs = matcher.logits(feats, matcher.encode_concepts(concepts)).softmax(dim=-1)[0]
        cams = []
        for j in range(len(indices)):
            (grad,) = torch.autograd.grad(probs[j], fmap, retain_graph=j < len(indices) - 1)
            weights = grad.mean(dim=(2, 3), keepdim=True)
            cams.append(F.relu((weights * fmap).sum(dim=1)).detach())
    cam = F.interpolate(torch.cat(cams)[:, None].float(), size=(height, width), mode="bilinear",
                        align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (cam / peak).clamp(0.0, 1.0).cpu().numpy().astype(np.float32)
