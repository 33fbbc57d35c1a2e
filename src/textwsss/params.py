"""params.yaml, typed and validated in one place.

Every stage calls `load_params()` before any work. An unknown key, a wrong type or an out-of-range
value stops it with a `ParamsError` naming the key path, the value given and what was expected.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PosFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Prob = Annotated[float, Field(ge=0, le=1)]
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]

REPO_ROOT = Path(__file__).resolve().parents[2]


def project_root(repo: Path = REPO_ROOT) -> Path:
    """The repository a user works in. `dvc exp run --queue` / `--temp` run a copy of it under
    <repository>/.dvc/tmp/exps/<tmp>/; relative data roots are meant relative to the repository itself."""
    parts = repo.parts
    for i in range(len(parts) - 3):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return repo


class Section(BaseModel):
    """Strict: no coercion of strings into numbers, no unknown keys."""
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataParams(Section):
    """Where the data lies and how it is laid out (data/layouts/ documents each layout's folder)."""
    layout: Literal["voc", "voc_aug", "coco", "tags"] = "voc"
    root: str = "../shared/voc-mini"
    classes: Union[Literal["voc", "coco"], list[str], None] = None  # None: the layout's own list
    prompts: dict[str, str] = {}  # prompt name of a class, e.g. {diningtable: dining table}
    train_split: str = "train"
    val_split: str = "val"
    score_split: str = ""  # voc_aug: the train ids CAMs and pseudo-labels are scored on ('': every masked train id)
    images: str = ""  # folder of the images below root ('': the layout's default)
    masks: str = ""  # folder of the label PNGs below root ('': the layout's default; coco: rasterise annotations)
    labels: str = ""  # image-level labels file below root: voc/voc_aug cls_labels.npy, tags tags.csv / tags.json
    workers: NonNegInt = 0

    @field_validator("classes")
    @classmethod
    def _class_names(cls, v):
        if isinstance(v, list):
            if not v or not all(isinstance(n, str) and n.strip() for n in v):
                raise ValueError("expected a preset name (voc, coco) or a non-empty list of class names")
            if len(set(v)) != len(v):
                raise ValueError(f"class names listed twice: {sorted({n for n in v if v.count(n) > 1})}")
        return v

    def root_path(self) -> Path:
        """Relative roots are taken from the repository (also when DVC runs a queued experiment in a copy)."""
        root = Path(self.root).expanduser()
        return root if root.is_absolute() else (project_root() / root).resolve()


class GuideParams(Section):
    kind: Literal["imagenet", "open_clip"] = "imagenet"
    arch: str = "ViT-B-32"
    pretrained: str = "openai"
    prompt: str = "a photo of a {}."
    temperature: PosFloat = 1.0
    calibrate: bool = True
    imagenet_classes: dict[str, list[Union[str, int]]] = {}  # imagenet stand-in: concept -> ImageNet classes

    @field_validator("prompt")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        if "{}" not in v:
            raise ValueError("the prompt template must contain '{}' where the concept goes")
        return v


class ClimsParams(Section):
    alpha: NonNegFloat = 10.0
    beta: NonNegFloat = 24.0
    gamma: NonNegFloat = 1.0
    delta: NonNegFloat = 0.2
    cbs_threshold: Prob = 0.26
    reduction: Literal["official", "per_image"] = "official"  # batch reduction of OTM/BTM/CBS (losses/clims.py)
    input_mode: Literal["clip", "official"] = "clip"  # what the matcher sees of a masked image (losses/clims.py)
    align_corners: bool = False  # bilinear resizing of maps and image to the matcher (official train_clims.py: true)
    class_prompts: dict[str, str] = {}  # a class's name in CLIMS's text prompts only (official VOC: person -> player)
    class_weights: dict[str, PosFloat] = {}
    synonyms: dict[str, list[str]] = {}
    background_words: Union[list[str], dict[str, list[str]]] = [
        "tree", "river", "sea", "lake", "water", "railway", "railroad", "track", "stone", "rocks"]

    def check_classes(self, classes) -> None:
        """The class-keyed settings name classes of the dataset's class list (checked when the list is known)."""
        problems = []
        for key, mapping in (("class_weights", self.class_weights), ("synonyms", self.synonyms),
                             ("class_prompts", self.class_prompts),
                             ("background_words", self.background_words if isinstance(self.background_words, dict)
                              else {})):
            unknown = []
            for name in mapping:
                try:
                    classes.index(name)
                except KeyError:
                    unknown.append(name)
            if unknown:
                problems.append(f"clims.{key}: unknown class names {unknown}")
        if problems:
            raise ParamsError("\n".join(problems) + f"\n(the dataset's classes are {list(classes.names)})")


class TrainCommon(Section):
    epochs: PosInt = 5
    batch_size: PosInt = 8
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: PosFloat = 0.01
    momentum: Prob = 0.9
    weight_decay: NonNegFloat = 1e-4
    schedule: Literal["poly", "step"] = "poly"  # poly: lr x (1 - step/steps)^poly_power; step: x step_gamma ...
    poly_power: NonNegFloat = 0.9
    step_epochs: list[PosInt] = []  # ... at the start of each of these epochs (schedule step)
    step_gamma: PosFloat = 0.1
    crop_size: PosInt = 256
    scale_range: list[PosFloat] = [0.75, 1.25]
    flip: bool = True
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"  # resizing of the training images
    crop_pad: Literal["black", "mean"] = "black"  # images smaller than the crop: black at the top-left, or the
    # ImageNet mean colour around the image placed at a random offset (IRN / CLIMS)
    amp: bool = True
    grad_clip: NonNegFloat = 0.0  # max global gradient norm (0: off)
    nproc_per_node: PosInt = 1

    @field_validator("scale_range")
    @classmethod
    def _range(cls, v: list[float]) -> list[float]:
        if len(v) != 2 or v[0] > v[1]:
            raise ValueError("expected [low, high] with low <= high")
        return v


BACKBONES = Literal["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50", "resnet101"]


class CamParams(Section):
    """The CAM network that train_cam_baseline and train_cam share."""
    backbone: BACKBONES = "efficientnet_lite0"
    pretrained: str = "imagenet"  # ImageNet weights of the backbone: imagenet | none | path/to/state_dict.pth
    output_stride: Literal[8, 16, 32] = 16
    dilate: bool = True  # keep the resolution by dilating the last stages (False: stride 1 without dilation, IRN)
    init: Literal["baseline", "imagenet"] = "baseline"  # train_cam starts from train_cam_baseline's network
    init_checkpoint: str = ""  # a baseline to use instead of training one: IRN's res50_cam.pth or a model.pt


class TrainCamBase(TrainCommon):
    head_lr_mult: PosFloat = 10.0
    resize_long: list[PosInt] = [256, 384]

    @field_validator("resize_long")
    @classmethod
    def _long(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or v[0] > v[1]:
            raise ValueError("expected [low, high] with low <= high")
        return v


class TrainCamBaselineParams(TrainCamBase):
    """The multi-label soft-margin (BCE) CAM network that CLIMS fine-tunes (IRN's res50_cam)."""


class TrainCamParams(TrainCamBase):
    loss: Literal["clims", "bce"] = "clims"
    matcher_batch: NonNegInt = 0  # masked images per matcher call (0: all of a step in one call)


class ThresholdSweep(Section):
    start: Prob = 0.05
    stop: Prob = 0.60
    step: PosFloat = 0.05

    @model_validator(mode="after")
    def _order(self):
        if self.start > self.stop:
            raise ValueError(f"start {self.start} is above stop {self.stop}")
        return self

    def values(self) -> list[float]:
        n = int(round((self.stop - self.start) / self.step)) + 1
        return [round(self.start + i * self.step, 6) for i in range(n)]


class MakeCamParams(Section):
    scales: list[PosFloat] = [1.0, 0.5, 1.5, 2.0]
    flip: bool = True
    interpolation: Literal["bilinear", "bicubic"] = "bilinear"  # resizing of the image to each scale
    # torch: F.interpolate on the float image; pil: PIL on the 8-bit image, antialiased (IRN / CLIMS)
    resize: Literal["torch", "pil"] = "torch"
    # stretch: each scale's map resized to H x W; irn: to H x W rounded up to 16, top-left H x W kept (IRN)
    geometry: Literal["stretch", "irn"] = "stretch"
    max_side: NonNegInt = 0  # 0: CAMs computed at the original image size
    batch_size: PosInt = 4  # images of equal size per batch
    max_pixels: NonNegInt = 150_000  # input pixels per forward pass (0: no cap; CPUs want ~1e5)
    nproc_per_node: PosInt = 1  # >1: the images are split across processes (GPUs) under torchrun


class EvalCamParams(Section):
    thresholds: ThresholdSweep = ThresholdSweep()
    figures: NonNegInt = 6


class CRFParams(Section):
    """Kernel settings of the dense CRF (defaults: IRN / CLIMS, METHODS.md section 3).

    gaussian_sxy / gaussian_compat: spatial smoothness kernel width (pixels) and its weight.
    bilateral_sxy / bilateral_srgb / bilateral_compat: appearance kernel widths (pixels, colour levels) and weight.
    iterations: mean-field inference steps.
    """
    gaussian_sxy: PosFloat = 3
    gaussian_compat: PosFloat = 3
    bilateral_sxy: PosFloat = 50
    bilateral_srgb: PosFloat = 5
    bilateral_compat: PosFloat = 10
    iterations: NonNegInt = 10  # 0: no mean-field step (the unary argmax)


# The CRF on probabilities as deeplab-pytorch / CLIP-ES use it (METHODS.md section 3).
DEEPLAB_CRF = CRFParams(gaussian_sxy=1, gaussian_compat=3, bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4,
                        iterations=10)


class PseudoLabelParams(Section):
    mode: Literal["irn", "prob", "none"] = "irn"
    workers: NonNegInt = 0  # 0: one per core
    fg_threshold: Prob = 0.30
    bg_threshold: Prob = 0.05
    threshold: Prob = 0.15
    gt_prob: Annotated[float, Field(gt=0, lt=1)] = 0.7
    prob_alpha: PosFloat = 1.0
    confidence: Prob = 0.95
    crf: CRFParams = CRFParams()

    @model_validator(mode="after")
    def _order(self):
        if self.bg_threshold > self.fg_threshold:
            raise ValueError(f"bg_threshold {self.bg_threshold} must not exceed fg_threshold {self.fg_threshold}")
        return self


class TrainIrnParams(TrainCommon):
    """IRN's relation network (its boundary branch, irn/boundary_net.py) on the CAM network's backbone, frozen,
    trained on random crops of the train images with their CRF seeds. Defaults: IRN's step/train_irn.py (crop
    512, batch 32, 3 epochs, lr 0.1, weight decay 1e-4, images rescaled by 0.5..1.5 and flipped, pairs within
    radius 10 on the stride-4 grid)."""
    epochs: PosInt = 3
    batch_size: PosInt = 32
    lr: PosFloat = 0.1
    crop_size: PosInt = 512
    scale_range: list[PosFloat] = [0.5, 1.5]
    radius: Annotated[int, Field(ge=2)] = 10  # pixel pairs closer than this on the stride-4 grid are related
    width: PosInt = 32  # channels each backbone level is reduced to (IRN: 32; GroupNorm(4) wants a multiple of 4)
    init_checkpoint: str = ""  # a relation network to use instead of training one: IRN's res50_irn.pth or a model.pt

    @field_validator("width")
    @classmethod
    def _groups(cls, v: int) -> int:
        if v % 4:
            raise ValueError("expected a multiple of 4 (each level's GroupNorm has 4 groups)")
        return v


class RandomWalkParams(Section):
    """IRN's random walk (step/make_sem_seg_labels.py): each train image's stride-4 CAMs propagated over the
    affinities of the relation network's boundary map, upsampled, argmax against a constant background score:
    a label for every pixel. Defaults: IRN's."""
    beta: PosFloat = 10.0  # transition matrix = affinity^beta, normalised
    exp_times: Annotated[int, Field(ge=0, le=12)] = 8  # 2^exp_times steps of the walk (the cost grows with it)
    radius: Annotated[int, Field(ge=2)] = 5  # the walk's neighbourhood on the stride-4 grid
    bg_threshold: Prob = 0.25  # IRN's sem_seg_bg_thres: the background score against the walked, max-normalised CAMs
    flip: bool = True  # boundary map: mean of the image's and its mirror image's logits (IRN)
    max_side: NonNegInt = 0  # the walk runs on the image downscaled to this long side (0: as it is, IRN)
    workers: NonNegInt = 0  # processes; 0: one per core


class CrisParams(Section):
    arch: str = "RN50"
    pretrained: str = "openai"
    prompt: str = "a photo of a {}."
    decoder_layers: PosInt = 3
    heads: PosInt = 8
    ffn_dim: PosInt = 2048
    bg_threshold: Prob = 0.35


class SegParams(Section):
    model: Literal["deeplab", "cris"] = "deeplab"
    # pseudo: the CRF seeds (pseudo_labels); random_walk: IRN's full-coverage labels; gt: the train masks (bound)
    labels: Literal["pseudo", "random_walk", "gt"] = "pseudo"
    backbone: BACKBONES = "efficientnet_lite0"
    pretrained: str = "imagenet"
    init: Literal["imagenet", "cam"] = "imagenet"  # cam: DeepLab's backbone starts from train_cam's network
    output_stride: Literal[8, 16] = 16
    aspp_channels: PosInt = 256
    decoder_channels: PosInt = 256
    cris: CrisParams = CrisParams()


class TrainSegParams(TrainCommon):
    backbone_lr_mult: NonNegFloat = 0.1
    freeze_stages: NonNegInt = 0  # the backbone's first stages (stem, then one per resolution) keep their weights
    freeze_batchnorm: bool = False  # every backbone BatchNorm keeps its statistics and weights
    loss: Literal["ce", "balanced_ce"] = "ce"  # balanced_ce: classes weighted by their label frequency^-0.5


class TrainCrisParams(TrainSegParams):
    """How train_seg trains CRIS (seg.model: cris); DeepLab uses train_seg. Defaults: CRIS.pytorch's cris_r50.yaml
    (Adam, lr 1e-4 with the CLIP encoders at 0.1x, no weight decay, x0.1 at epoch 35 of 50, input 416, batch 64)."""
    epochs: PosInt = 50
    batch_size: PosInt = 64
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: PosFloat = 1e-4
    weight_decay: NonNegFloat = 0.0
    schedule: Literal["poly", "step"] = "step"
    step_epochs: list[PosInt] = [35]
    crop_size: PosInt = 416
    scale_range: list[PosFloat] = [1.0, 1.0]


class EvalSegParams(Section):
    scales: list[PosFloat] = [1.0]
    flip: bool = False
    postprocess_crf: bool = False
    crf: CRFParams = DEEPLAB_CRF
    max_side: NonNegInt = 0  # the model sees images downscaled to this long side (0: as they are)
    class_gate: Literal["none", "matcher", "labels"] = "none"  # matcher: only classes the matcher finds; labels: analysis
    figures: NonNegInt = 6


class ZeroshotParams(Section):
    background_words: list[str] = [
        "ground", "land", "grass", "tree", "building", "wall", "sky", "lake", "water", "river", "sea", "railway",
        "railroad", "keyboard", "helmet", "cloud", "house", "mountain", "ocean", "road", "rock", "street", "valley",
        "bridge", "sign"]
    thresholds: ThresholdSweep = ThresholdSweep()
    max_side: NonNegInt = 0
    tune_images: NonNegInt = 32  # label-free variant: train images its thresholds are tuned on (0: all)


class TasParams(Section):
    proposer: Literal["superpixel", "sam"] = "superpixel"
    sam_checkpoint: str = ""
    min_area: PosInt = 800
    max_masks: PosInt = 40
    alpha: NonNegFloat = 0.1
    lam: NonNegFloat = 0.1
    captioner: bool = True
    rectifier: bool = True
    negatives: bool = True
    use_seg_model: bool = True
    fill: Literal["zero", "mean"] = "mean"
    margin: NonNegFloat = 0.1
    max_side: NonNegInt = 0


class Params(Section):
    seed: NonNegInt = 0
    device: str = "auto"
    data: DataParams = DataParams()
    guide: GuideParams = GuideParams()
    clims: ClimsParams = ClimsParams()
    cam: CamParams = CamParams()
    train_cam_baseline: TrainCamBaselineParams = TrainCamBaselineParams()
    train_cam: TrainCamParams = TrainCamParams()
    make_cam: MakeCamParams = MakeCamParams()
    eval_cam: EvalCamParams = EvalCamParams()
    pseudo_labels: PseudoLabelParams = PseudoLabelParams()
    train_irn: TrainIrnParams = TrainIrnParams()
    random_walk: RandomWalkParams = RandomWalkParams()
    seg: SegParams = SegParams()
    train_seg: TrainSegParams = TrainSegParams(optimizer="sgd", lr=0.01)
    train_cris: TrainCrisParams = TrainCrisParams()
    eval_seg: EvalSegParams = EvalSegParams()
    zeroshot: ZeroshotParams = ZeroshotParams()
    tas: TasParams = TasParams()

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()):
            return v
        raise ValueError("expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


class ParamsError(ValueError):
    """Raised with every problem of a params file, one per line."""


def _describe(error: dict) -> str:
    path = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key (value {error['input']!r}); check the spelling against the documented keys"
    value = error.get("input")
    return f"{path}: got {value!r} ({type(value).__name__}): {error['msg'].removeprefix('Value error, ')}"


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        lines = [_describe(e) for e in err.errors()]
        raise ParamsError(f"{source}: {len(lines)} invalid parameter(s):\n  " + "\n  ".join(lines)) from None


def load_params(path: str | os.PathLike | None = None) -> Params:
    """Reads and validates params.yaml (default: the one at the repository root, or $TEXTWSSS_PARAMS)."""
    path = Path(path or os.environ.get("TEXTWSSS_PARAMS") or REPO_ROOT / "params.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({err})") from None
    return parse_params(raw, str(path))


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParamsError(f"device: {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return device
