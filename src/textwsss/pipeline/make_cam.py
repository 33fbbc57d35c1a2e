"""make_cam: multi-scale + flip CAMs of every train image from the trained CAM network, one compact file each
(cam.save_cam's format: the full-resolution `cams`, the random walk's stride-4 `cams_s4`, the `keys`).

Images of equal working size are batched (one forward pass per scale, flips in the same pass); the batches are
fixed by the id list alone, so each file's bytes do not depend on how the work was split or resumed. The stage
streams: it holds one batch at a time, whatever the number of images. Under torchrun (make_cam.nproc_per_node
> 1, or `torchrun --nproc_per_node N stages/make_cam.py`) each process takes every N-th batch. An interrupted run
resumes where it stopped, after checking every file it keeps against the folder's manifest (pipeline/resumable.py).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..cam import WALK_STRIDE, group_by_size, multiscale_cams_strided, strided_size
from ..data.images import image_size, working_size
from ..data.prepared import PreparedDataset
from ..data.transforms import pil_resize_uint8, to_tensor
from ..io import npz_bytes
from ..models.runtime import for_inference, image_probe
from ..params import resolve_device
from ..training.loop import Distributed
from .resumable import ResumableFolder, stamp_of
from .workspace import Workspace

log = logging.getLogger(__name__)


def cam_batches(data: PreparedDataset, ids: Sequence[str], max_side: int,
                batch_size: int) -> tuple[list[list[str]], dict, dict]:
    """(batches of ids of equal working size, original sizes, working sizes), in a deterministic order."""
    sizes = {i: image_size(data.image_path(i)) for i in ids}
    work = {i: working_size(*sizes[i], max_side) for i in ids}
    return group_by_size(work, batch_size), sizes, work


def cam_bytes(cams: np.ndarray, keys: Sequence[int], cams_s4: np.ndarray | None = None) -> bytes:
    """The bytes of a CAM file in cam.save_cam's format, made in memory so that the folder hashes what it writes:
    float16 `cams` (C, H, W) at image resolution (cam.load_cam), int64 `keys` (C,), and when given float16
    `cams_s4` (C, ceil(H/4), ceil(W/4)), the random walk's stride-4 maps (cam.load_cam_strided)."""
    arrays = dict(cams=np.asarray(cams, dtype=np.float16), keys=np.asarray(keys, dtype=np.int64))
    if cams_s4 is not None:
        arrays["cams_s4"] = np.asarray(cams_s4, dtype=np.float16)
    return npz_bytes(**arrays)


def _working_image(data: PreparedDataset, image_id: str, work: tuple[int, int], size: tuple[int, int],
                   resize: str, interpolation: str) -> torch.Tensor:
    """The image at its working size as (3, h, w) in [0, 1]: resize 'torch' downscales the float image
    bilinearly (as before the option existed), 'pil' the 8-bit image with PIL (IRN's pipeline, antialiased)."""
    if resize == "pil":
        return to_tensor(pil_resize_uint8(data.read_image(image_id), work, interpolation))
    x = to_tensor(data.read_image(image_id))
    if work != size:
        x = F.interpolate(x[None], size=work, mode="bilinear", align_corners=False)[0]
    return x


def make_cams(model, data: PreparedDataset, ids: Sequence[str], out: ResumableFolder, *, scales: Sequence[float],
              flip: bool, max_side: int, batch_size: int = 4, max_pixels: int = 0, interpolation: str = "bilinear",
              geometry: str = "stretch", resize: str = "torch", device: str | torch.device = "cpu", rank: int = 0,
              world: int = 1) -> int:
    """Writes a CAM file (cam.save_cam) for every id of this process's share that the folder lacks; returns
    how many it wrote. geometry / resize: cam.multiscale_cams; the full-resolution maps are made at the working
    size and stretched to the image's (max_side), the stride-4 ones straight at the image's stride-4 size."""
    model = for_inference(model, device, probe=image_probe(device))
    batches, sizes, work = cam_batches(data, ids, max_side, batch_size)
    mine = [b for n, b in enumerate(batches) if n % world == rank]
    todo = [b for b in mine if not all(out.done(i) for i in b)]
    written = 0
    with tqdm(total=sum(map(len, mine)), initial=sum(map(len, mine)) - sum(map(len, todo)), desc="make_cam",
              unit="img", disable=None if rank == 0 else True) as bar:
        for batch_ids in todo:
            images = [_working_image(data, i, work[i], sizes[i], resize, interpolation) for i in batch_ids]
            keys = [data.labels[i] for i in batch_ids]
            strided = [strided_size(sizes[i], WALK_STRIDE) for i in batch_ids]
            cams, cams_s4 = multiscale_cams_strided(model, torch.stack(images).to(device), keys, strided, scales,
                                                    flip, max_pixels, interpolation, geometry, resize)
            for i, k, cam, cam_s4 in zip(batch_ids, keys, cams, cams_s4):
                if out.done(i):
                    continue  # written before an interruption; the batch only ran for its other images
                if work[i] != sizes[i] and len(k):
                    cam = F.interpolate(cam[None], size=sizes[i], mode="bilinear", align_corners=False)[0]
                elif not len(k):
                    cam = cam.new_zeros((0, *sizes[i]))
                out.write(i, cam_bytes(cam.cpu().numpy(), k, cam_s4.cpu().numpy()))
                written += 1
            bar.update(len(batch_ids))
    return written


def run(params, ws: Workspace) -> None:
    p = params.make_cam
    env = Distributed(resolve_device(params.device))
    torch.manual_seed(params.seed)
    data = ws.dataset(params)
    ids = data.ids("train")
    model_file = ws.model_file("train_cam")
    model, _ = ws.load_stage_model("train_cam", env.device)
    # What the files depend on; the pixel cap and batch size only change float rounding, so they count too.
    stamp = stamp_of({"make_cam": p.model_dump(exclude={"nproc_per_node"})}, [model_file, ws.prepared / "dataset.json"])
    out = ResumableFolder(ws.cams, stamp, ".npz")
    out.open(main=env.main)
    env.barrier()
    written = make_cams(model, data, ids, out, scales=p.scales, flip=p.flip, max_side=p.max_side,
                        batch_size=p.batch_size, max_pixels=p.max_pixels, interpolation=p.interpolation,
                        geometry=p.geometry, resize=p.resize, device=env.device, rank=env.rank, world=env.world)
    env.barrier()
    if env.main:
        out.finish(ids)
        log.info("CAMs of %d images in %s (%d computed by this process now)", len(ids), ws.cams, written)
