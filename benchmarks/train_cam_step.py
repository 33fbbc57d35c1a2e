"""Speed of one CLIMS training step as the train_cam stage runs it vs a plain per-pair loop.

All paths run the same step on the same batch (N voc-mini train images, short side resized to --crop and
centre-cropped, labels from their masks): CAM network forward (EfficientNet-Lite0, ImageNet weights, output
stride 16, 20 classes, train mode), sigmoid, CLIMS loss with the frozen ImageNet matcher (uncalibrated on every
path), backward. The loss weights, reduction, input mode and background words are params.yaml's `clims`.
- reference: `per_pair_clims_loss` below, the straightforward loop: two matcher calls (fg, bg) per
             present (image, class) pair, networks in PyTorch's default (NCHW) layout;
- stage:     textwsss.training.steps.clims_step, the step train_cam runs: the 2P masked images stacked and
             encoded in calls of --matcher-batch images (params train_cam.matcher_batch), networks channels-last
             (textwsss.models.runtime.place), the frozen matcher's BatchNorm folded (build_matcher);
- informative rows split the gain: the per-pair loop on the stage's networks, and clims_loss with the whole stack
  in ONE matcher call (what a GPU wants; on a CPU a 30-image call at 224 px runs slower per image than
  calls of ~8, whose activations stay in the caches).
First checks, in float64, that every path gives the reference's loss terms (relative 1e-5) and CAM gradients
(relative L2 1e-6); then times the float32 step of each path and prints steps/s and the ratios.

    python benchmarks/train_cam_step.py [--n 8] [--crop 224] [--threads 2] [--repeats 5] [--matcher-batch 8]
                                        [--device cpu] [--root ../shared/voc-mini] [--quick]
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
from _voc import voc_root, voc_subset

from textwsss.data.transforms import multi_hot, to_tensor
from textwsss.guide import build_matcher
from textwsss.guide.base import SIM_MAX, SIM_MIN, Matcher
from textwsss.guide.factory import prepare_matcher
from textwsss.guide.imagenet_matcher import ImageNetMatcher
from textwsss.params import load_params
from textwsss.training.steps import clims_step

log = logging.getLogger(__name__)
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-6  # float64 (the matcher casts its input images to float32: ~1e-8 remains)
TARGET_RATIO = 2.0
# the reference's own copy of ImageNet's statistics, for input_mode 'official'
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_batch(root: Path, n: int, crop: int) -> tuple[Tensor, Tensor, list[str]]:
    """The first n train images with at least one object: (n,3,crop,crop) in [0,1] (short side resized to
    crop, centre crop), their (n,20) multi-hot labels from the masks, and the class prompts."""
    data = voc_subset(root, "train", n, with_objects=True)
    images, labels = [], []
    for image_id in data.ids("train"):
        x = to_tensor(data.read_image(image_id))
        h, w = x.shape[1:]
        scale = crop / min(h, w)
        size = (max(crop, round(h * scale)), max(crop, round(w * scale)))
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0]
        top, left = (size[0] - crop) // 2, (size[1] - crop) // 2
        images.append(x[:, top:top + crop, left:left + crop])
        labels.append(multi_hot(data.labels[image_id], data.classes.num_classes))
    return torch.stack(images), torch.stack(labels), list(data.classes.prompts)


def per_pair_clims_loss(maps: Tensor, images: Tensor, labels: Tensor, matcher: Matcher,
                        class_concepts: Sequence[str], background_concepts: Sequence[str], *, alpha: float,
                        beta: float, gamma: float, delta: float, cbs_threshold: float, reduction: str,
                        input_mode: str) -> dict[str, Tensor]:
    """Reference CLIMS loss (shared background word list): one matcher call for the foreground and one for
    the background of every present (image, class) pair. reduction 'official': OTM and BTM averaged over the
    pairs, CBS summed; 'per_image': per-image sums averaged over the batch. input_mode 'official': the
    ImageNet-normalised image is masked and given to the matcher as it is; 'clip': the [0,1] image is masked."""
    batch = maps.shape[0]
    size = (matcher.input_size, matcher.input_size)
    concept_feats = matcher.encode_concepts(list(class_concepts) + list(background_concepts))
    k_count = len(class_concepts)
    zero = maps.sum() * 0.0
    mean = torch.tensor(MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    otm, btm, cbs, owner = [], [], [], []
    for b, k in torch.nonzero(labels > 0.5).tolist():
        image = F.interpolate(images[b:b + 1], size=size, mode="bilinear", align_corners=False)
        if input_mode == "official":
            image = (image - mean) / std
        encode = matcher.encode_prenormalised if input_mode == "official" else matcher.encode_images
        p = F.interpolate(maps[b:b + 1, k:k + 1], size=size, mode="bilinear", align_corners=False)
        s_fg = matcher.similarity(encode(image * p), concept_feats).clamp(SIM_MIN, SIM_MAX)[0]
        s_bg = matcher.similarity(encode(image * (1.0 - p)), concept_feats).clamp(SIM_MIN, SIM_MAX)[0]
        otm.append(-torch.log(s_fg[k]))
        btm.append(-torch.log(1.0 - s_bg[k]))
        s_words = s_fg[k_count:]
        cbs.append((-torch.log(1.0 - s_words) * (s_words > cbs_threshold)).sum())
        owner.append(b)
    if reduction == "official":
        terms = {"otm": torch.stack(otm).mean(), "btm": torch.stack(btm).mean(), "cbs": torch.stack(cbs).sum()}
    else:
        def per_image(values):
            sums = [zero] * batch
            for b, v in zip(owner, values):
                sums[b] = sums[b] + v
            return torch.stack(sums).mean()
        terms = {"otm": per_image(otm), "btm": per_image(btm), "cbs": per_image(cbs)}
    terms["reg"] = maps.mean()
    terms["total"] = alpha * terms["otm"] + beta * terms["btm"] + gamma * terms["cbs"] + delta * terms["reg"]
    return terms


def train_step(model: torch.nn.Module, loss: Callable, images: Tensor, labels: Tensor) -> tuple[dict[str, float], Tensor]:
    """Forward + loss + backward of one step; the loss terms and the flattened CAM gradients.
    loss(model, images, labels) -> terms."""
    torch.manual_seed(0)  # the same stochastic-depth draws in the CAM network on both paths
    model.zero_grad(set_to_none=True)
    out = loss(model, images, labels)
    out["total"].backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return {k: float(v.detach()) for k, v in out.items()}, grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="VOC-layout data root (default ../shared/voc-mini)")
    parser.add_argument("--n", type=int, default=8, help="batch size (train images with objects)")
    parser.add_argument("--crop", type=int, default=224, help="square training crop")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per path; the fastest counts")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--matcher-batch", type=int, default=None,
                        help="stage path: masked images per matcher call (default params train_cam.matcher_batch)")
    parser.add_argument("--quick", action="store_true",
                        help="1 image at 64 px, 1 thread, 1 timed step: checks it runs (the ratio means little)")
    args = parser.parse_args()
    if args.quick:  # one thread: on a loaded machine two spinning OpenMP threads stall each other
        args.n, args.crop, args.repeats, args.threads = 1, 64, 1, 1
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = voc_root(args.root)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    from textwsss.models.factory import build_cam_net
    from textwsss.models.runtime import place

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    clims = params.clims
    if not isinstance(clims.background_words, list):
        raise SystemExit("params clims.background_words: this benchmark's reference takes one shared word list, "
                         "got a mapping per class")
    options = {"alpha": clims.alpha, "beta": clims.beta, "gamma": clims.gamma, "delta": clims.delta,
               "cbs_threshold": clims.cbs_threshold, "reduction": clims.reduction, "input_mode": clims.input_mode}
    matcher_batch = params.train_cam.matcher_batch if args.matcher_batch is None else args.matcher_batch

    images, labels, class_concepts = load_batch(root, args.n, args.crop)
    model = build_cam_net(backbone="efficientnet_lite0", pretrained="imagenet", output_stride=16,
                          num_classes=labels.shape[1]).train()
    plain_model = copy.deepcopy(model).to(device)  # PyTorch's default layout, for the reference
    model = place(model, device)
    matcher = build_matcher("imagenet", device=device)  # as the stage builds it: channels-last, BatchNorm folded
    plain_matcher = ImageNetMatcher().to(device)  # the same frozen classifier, NCHW, BatchNorm kept
    words = matcher.check_concepts(clims.background_words, background=True)
    images, labels = images.to(device), labels.to(device)
    pairs = int((labels > 0.5).sum())
    log.info("%d images at %d px, %d present (image, class) pairs -> %d masked images per step; "
             "background words %s; reduction %s, input_mode %s; %d threads, %s", args.n, args.crop, pairs, 2 * pairs,
             words, clims.reduction, clims.input_mode, args.threads, device)
    setup = (class_concepts, words, options, matcher_batch)

    paths = step_paths(model, matcher, plain_model, plain_matcher, *setup)
    reference, stage = next(iter(paths)), list(paths)[-1]
    keep = (reference, stage) if args.quick else tuple(paths)  # quick: without the informative rows
    paths = {name: path for name, path in paths.items() if name in keep}

    # Correctness in float64, where neither batching nor layout changes more than the last bits; float32
    # rounding differs between layouts by ~1e-3 relative (BatchNorm in train mode amplifies it), so the
    # timed float32 runs below only report their differences.
    # (the stage's networks are prepared again from float64 copies: folding in float32 leaves float32 rounding)
    model64, matcher64 = copy.deepcopy(plain_model).double(), copy.deepcopy(plain_matcher).double()
    # Matcher.resize hands the network float32 (a float64 matcher is only this check's); cast back after it
    resize32 = matcher64.resize
    matcher64.resize = lambda x: resize32(x).double()
    double = step_paths(place(copy.deepcopy(model64), device), prepare_matcher(matcher64, device), model64,
                        matcher64, *setup)
    double = {name: path for name, path in double.items() if name in keep}
    checks = {name: train_step(*path, images.double(), labels) for name, path in double.items()}
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
        train_step(*path, images, labels)  # warm-up (allocator, kernels, concept cache)
    results = {name: best_time(lambda p=path: train_step(*p, images, labels), args.repeats, device)
               for name, path in paths.items()}
    (ref_terms, ref_grads), t_ref = results[reference]
    for name, ((terms, grads), seconds) in results.items():
        loss_err, grad_err = differences(terms, grads, ref_terms, ref_grads)
        print(f"{name:38s} {1 / seconds:.3f} steps/s ({seconds:.2f} s/step), {t_ref / seconds:.2f}x reference; "
              f"float32 loss {terms['total']:.4f} (rel. diff {loss_err:.1e}, gradient {grad_err:.1e})")
    print(f"speed-up stage step vs reference: {t_ref / results[stage][1]:.2f}x (target >= {TARGET_RATIO}x)")


def step_paths(model, matcher, plain_model, plain_matcher, class_concepts, words, options,
               matcher_batch: int) -> dict[str, tuple]:
    """name -> (CAM net, loss(model, images, labels)); the reference first, the stage's own step
    (textwsss.training.steps.clims_step, as train_cam builds it) last."""
    def per_pair(m):
        def loss(net, images, labels):
            return per_pair_clims_loss(torch.sigmoid(net(images)), images, labels, m, class_concepts, words,
                                       **options)
        return loss

    def stage(m, per_call):
        step = clims_step(m, class_concepts, words, class_weights=None, max_images_per_call=per_call, **options)
        return lambda net, images, labels: step(net, (images, labels), images.device)

    return {
        "reference: per-pair loop, NCHW": (plain_model, per_pair(plain_matcher)),
        "  per-pair loop, stage networks": (model, per_pair(matcher)),
        "  clims_loss, one call, stage networks": (model, stage(matcher, 0)),
        f"stage: clims_step, calls of {matcher_batch}": (model, stage(matcher, matcher_batch)),
    }


def differences(terms, grads, ref_terms, ref_grads) -> tuple[float, float]:
    """Largest relative loss-term difference and relative L2 difference of the CAM gradients."""
    loss_err = max(abs(terms[k] - ref_terms[k]) / max(1.0, abs(ref_terms[k])) for k in ref_terms)
    grad_err = float((grads - ref_grads).norm() / ref_grads.norm().clamp_min(1e-30))
    return loss_err, grad_err


if __name__ == "__main__":
    main()
