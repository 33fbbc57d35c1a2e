"""make_cam: multi-scale + flip CAMs of every train image, from the trained CAM network."""
import torch
from _common import PREPARED, ROOT, start

from textwsss.checkpoints import load_model
from textwsss.make_cams import make_cams
from textwsss.params import resolve_device
from textwsss.prepare import read_prepared

if __name__ == "__main__":
    params = start("make_cam")
    torch.manual_seed(params.seed)
    device = resolve_device(params.device)
    ids, labels = read_prepared(PREPARED, params.data.train_split)
    model, _ = load_model(ROOT / "data" / "train_cam" / "model.pt", device)
    make_cams(model, params.data.root_path(), ids, labels, ROOT / "data" / "cams", scales=params.make_cam.scales,
              flip=params.make_cam.flip, max_side=params.make_cam.max_side,
              batch_size=params.make_cam.batch_size, max_pixels=params.make_cam.max_pixels, device=device)
