"""Speed of one CLIMS training step as the train_cam stage runs it vs a plain per-pair loop.

All paths run the same step on the same batch (N voc-mini train images, short side resized to --crop and
centre-cropped, labels from their masks): CAM network forward (EfficientNet-Lite0, ImageNet weights, output
stride 16, 20 classes, train mode), sigmoid, CLIMS loss with the frozen ImageNet matcher, backward.
- reference: `per_pair_clims_loss` below, the straightforward loop: two encode_images calls (fg, bg) per
             present (image, class) pair, networks in PyTorch's default (NCHW) layout;
- stage:     textwsss.losses.clims.clims_loss as the stage runs it: the 2P masked images stacked and encoded
             in calls of --matcher-batch images (params train_cam.matcher_batch), networks channels-last
             (textwsss.models.runtime.place), the frozen matcher's BatchNorm folded (build_matcher);
- informative rows split the gain: the per-pair loop on the stage's networks, and clims_loss with the whole stack
  in ONE matcher call (what a GPU wants; on a CPU a 30-image call at 224 px runs slower per image than
  calls of ~8, whose activations stay in the caches).
First checks, in float64, that every path gives the reference's loss terms (relative 1e-5) and CAM gradients
(relative L2 1e-6); then times the float32 step of each path and prints steps/s and the ratios.

    python benchmarks/train_cam_step.py [--n 8] [--crop 224] [--threads 2] [--repeats 5] [--matcher-batch 8]
                                        [--device cpu]
"""
from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from _timing import best_time

from textwsss.datasets import multi_hot, to_tensor
from textwsss.guide import build_matcher
from textwsss.guide.factory import prepare_matcher
from textwsss.guide.base import SIM_MAX, SIM_MIN, Matcher
from textwsss.guide.imagenet_matcher import ImageNetMatcher
from textwsss.losses.clims import clims_loss
from textwsss.voc import CLASS_NAMES, image_path, labels_of_mask, mask_path, read_image, read_mask, read_split, readable

log = logging.getLogger(__name__)
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-6  # float64 (the matcher casts its input images to float32: ~1e-8 remains)
TARGET_RATIO = 2.0
# The public CLIMS VOC background words; the ImageNet matcher keeps those it has classes for.
BACKGROUND_WORDS = ["tree", "river", "sea", "lake", "water", "railway", "railroad", "track", "stone", "rocks"]
WEIGHTS = {"alpha": 10.0, "beta": 24.0, "gamma": 1.0, "delta": 0.2, "cbs_threshold": 0.26}


def load_batch(root: Path, n: int, crop: int) -> tuple[Tensor, Tensor]:
    """The first n train images with at least one object: (n,3,crop,crop) in [0,1] (short side resized to
    crop, centre crop) and their (n,20) multi-hot labels."""
    images, labels = [], []
    for image_id in read_split(root, "train"):
        classes = [int(k) for k in labels_of_mask(read_mask(mask_path(root, image_id)))]
        if not classes:
            continue
        x = to_tensor(read_image(image_path(root, image_id)))
        h, w = x.shape[1:]
        scale = crop / min(h, w)
        size = (max(crop, round(h * scale)), max(crop, round(w * scale)))
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
        top, left = (size[0] - crop) // 2, (size[1] - crop) // 2
        images.append(x[:, top:top + crop, left:left + crop])
        labels.append(multi_hot(classes))
        if len(images) == n:
            break
    if len(images) < n:
        raise ValueError(f"--n: {root} has only {len(images)} train images with objects, asked for {n}")
    return torch.stack(images), torch.stack(labels)


def per_pair_clims_loss(maps: Tensor, images: Tensor, labels: Tensor, matcher: Matcher,
                        class_concepts: Sequence[str], background_concepts: Sequence[str], *, alpha: float,
                        beta: float, gamma: float, delta: float, cbs_threshold: float) -> dict[str, Tensor]:
    """Reference CLIMS loss (shared background word list): one matcher call for the foreground and one for
    the background of every present (image, class) pair; per-image sums averaged over the batch."""
    batch = maps.shape[0]
    size = (matcher.input_size, matcher.input_size)
    concept_feats = matcher.encode_concepts(list(class_concepts) + list(background_concepts))
    k_count = len(class_concepts)
    zero = maps.sum() * 0.0
    otm, btm, cbs = [zero] * batch, [zero] * batch, [zero] * batch
    for b, k in torch.nonzero(labels > 0.5).tolist():
        image = F.interpolate(images[b:b + 1], size=size, mode="bilinear", align_corners=False)
        p = F.interpolate(maps[b:b + 1, k:k + 1], size=size, mode="bilinear", align_corners=False)
        s_fg = matcher.similarity(matcher.encode_images(image * p), concept_feats).clamp(SIM_MIN, SIM_MAX)[0]
        s_bg = matcher.similarity(matcher.encode_images(image * (1.0 - p)), concept_feats).clamp(SIM_MIN, SIM_MAX)[0]
        otm[b] = otm[b] - torch.log(s_fg[k])
        btm[b] = btm[b] - torch.log(1.0 - s_bg[k])
        s_words = s_fg[k_count:]
        cbs[b] = cbs[b] + (-torch.log(1.0 - s_words) * (s_words > cbs_threshold)).sum()
    terms = {"otm": torch.stack(otm).mean(), "btm": torch.stack(btm).mean(), "cbs": torch.stack(cbs).mean(),
             "reg": maps.mean()}
    terms["total"] = alpha * terms["otm"] + beta * terms["btm"] + gamma * terms["cbs"] + delta * terms["reg"]
    return terms


LossFn = Callable[..., dict[str, Tensor]]


def train_step(model: torch.nn.Module, images: Tensor, labels: Tensor, matcher: Matcher, words: list[str],
               loss_fn: LossFn, **loss_options) -> tuple[dict[str, float], Tensor]:
    """Forward + loss + backward of one step; the loss terms and the flattened CAM gradients."""
    torch.manual_seed(0)  # the same stochastic-depth draws in the CAM network on both paths
    model.zero_grad(set_to_none=True)
    maps = torch.sigmoid(model(images))
    out = loss_fn(maps, images, labels, matcher, [readable(c) for c in CLASS_NAMES], words, **WEIGHTS,
                  **loss_options)
    out["total"].backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return {k: float(v.detach()) for k, v in out.items()}, grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/work/shared/voc-mini"))
    parser.add_argument("--n", type=int, default=8, help="batch size (train images with objects)")
    parser.add_argument("--crop", type=int, default=224, help="square training crop")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per path; the fastest counts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--matcher-batch", type=int, default=8,
                        help="stage path: masked images per matcher call, as params train_cam.matcher_batch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    from textwsss.models.factory import build_cam_net
    from textwsss.models.runtime import place

    model = build_cam_net(backbone="efficientnet_lite0", pretrained="imagenet", output_stride=16,
                          num_classes=len(CLASS_NAMES)).train()
    plain_model = copy.deepcopy(model).to(device)  # PyTorch's default layout, for the reference
    model = place(model, device)
    matcher = build_matcher("imagenet", device=device)  # as the stage builds it: channels-last, BatchNorm folded
    plain_matcher = ImageNetMatcher().to(device)  # the same frozen classifier, NCHW, BatchNorm kept
    words = matcher.check_concepts(BACKGROUND_WORDS, background=True)
    images, labels = load_batch(args.root, args.n, args.crop)
    images, labels = images.to(device), labels.to(device)
    pairs = int((labels > 0.5).sum())
    log.info("%d images at %d px, %d present (image, class) pairs -> %d masked images per step; "
             "background words %s; %d threads, %s", args.n, args.crop, pairs, 2 * pairs, words, args.threads, device)

    paths = step_paths(model, matcher, plain_model, plain_matcher, words, args.matcher_batch)
    reference, stage = next(iter(paths)), list(paths)[-1]

    # Correctness in float64, where neither batching nor layout changes more than the last bits; float32
    # rounding differs between layouts by ~1e-3 relative (BatchNorm in train mode amplifies it), so the
    # timed float32 runs below only report their differences.
    # (the stage's networks are prepared again from float64 copies: folding in float32 leaves float32 rounding)
    model64, matcher64 = copy.deepcopy(plain_model).double(), copy.deepcopy(plain_matcher).double()
    double = step_paths(place(copy.deepcopy(model64), device), prepare_matcher(matcher64, device), model64,
                        matcher64, words, args.matcher_batch)
    checks = {name: run_path(*path, images.double(), labels, words) for name, path in double.items()}
    ref_terms, ref_grads = checks[reference]
    failed = False
    for name, (terms, grads) in checks.items():
        loss_err, grad_err = differences(terms, grads, ref_terms, ref_grads)
        ok = loss_err <= LOSS_RTOL and grad_err <= GRAD_RTOL
        failed |= not ok
        log.info("float64 %-38s loss rel. diff %.1e, gradient rel. L2 diff %.1e %s", name, loss_err, grad_err,
                 "OK" if ok else "MISMATCH")
    if failed:
        raise SystemExit(f"a path disagrees with the reference in float64 (loss rtol {LOSS_RTOL}, "
                         f"gradient rtol {GRAD_RTOL})")

    for path in paths.values():
        run_path(*path, images, labels, words)  # warm-up (allocator, kernels, concept cache)
    results = {name: best_time(lambda p=path: run_path(*p, images, labels, words), args.repeats, device)
               for name, path in paths.items()}
    (ref_terms, ref_grads), t_ref = results[reference]
    for name, ((terms, grads), seconds) in results.items():
        loss_err, grad_err = differences(terms, grads, ref_terms, ref_grads)
        print(f"{name:38s} {1 / seconds:.3f} steps/s ({seconds:.2f} s/step), {t_ref / seconds:.2f}x reference; "
              f"float32 loss {terms['total']:.4f} (rel. diff {loss_err:.1e}, gradient {grad_err:.1e})")
    print(f"speed-up stage step vs reference: {t_ref / results[stage][1]:.2f}x (target >= {TARGET_RATIO}x)")


def step_paths(model, matcher, plain_model, plain_matcher, words, matcher_batch: int) -> dict[str, tuple]:
    """name -> (CAM net, matcher, loss function, loss options); the reference first, the stage's step last."""
    return {
        "reference: per-pair loop, NCHW": (plain_model, plain_matcher, per_pair_clims_loss, {}),
        "  per-pair loop, stage networks": (model, matcher, per_pair_clims_loss, {}),
        "  clims_loss, one call, stage networks": (model, matcher, clims_loss, {}),
        f"stage: clims_loss, calls of {matcher_batch}": (model, matcher, clims_loss,
                                                               {"max_images_per_call": matcher_batch}),
    }


def run_path(model, matcher, loss_fn, options, images, labels, words):
    return train_step(model, images, labels, matcher, words, loss_fn, **options)


def differences(terms, grads, ref_terms, ref_grads) -> tuple[float, float]:
    """Largest relative loss-term difference and relative L2 difference of the CAM gradients."""
    loss_err = max(abs(terms[k] - ref_terms[k]) / max(1.0, abs(ref_terms[k])) for k in ref_terms)
    grad_err = float((grads - ref_grads).norm() / ref_grads.norm().clamp_min(1e-30))
    return loss_err, grad_err

if __name__ == "__main__":
    main()
