"""tas: training-free zero-shot referring segmentation on expressions built from the val ground truth."""
import logging

import torch
from _common import METRICS, PREPARED, ROOT, start

from textwsss.checkpoints import load_model
from textwsss.guide.factory import build_matcher
from textwsss.io import write_json
from textwsss.params import resolve_device
from textwsss.prepare import read_prepared
from textwsss.tas.benchmark import run_benchmark
from textwsss.tas.captioner import build_captioner
from textwsss.tas.proposals import build_proposer
from textwsss.tas.referring import build_expressions, save_expressions
from textwsss.voc import CLASS_NAMES, readable

log = logging.getLogger("tas")

if __name__ == "__main__":
    params = start("tas")
    t, g = params.tas, params.guide
    torch.manual_seed(params.seed)
    device = resolve_device(params.device)
    root = params.data.root_path()
    ids, _ = read_prepared(PREPARED, params.data.val_split)
    exprs = build_expressions(root, ids, min_area=t.min_area)
    save_expressions(ROOT / "data" / "tas" / "expressions.jsonl", exprs)
    matcher = build_matcher(g.kind, arch=g.arch, pretrained=g.pretrained, prompt=g.prompt,
                            temperature=g.temperature, device=device)
    if t.proposer == "sam":
        proposer = build_proposer("sam", checkpoint=t.sam_checkpoint, min_mask_region_area=t.min_area, device=device)
    else:
        proposer = build_proposer("superpixel", min_area=t.min_area, max_masks=t.max_masks)
    captioner = build_captioner(t.captioner, device=device)
    seg_model = None
    if t.use_seg_model:
        seg_model, _ = load_model(ROOT / "data" / "train_seg" / "model.pt", device)
    vocabulary = [readable(n) for n in CLASS_NAMES] + matcher.check_concepts(params.zeroshot.background_words,
                                                                              background=True)
    scores, _, seconds = run_benchmark(root, exprs, proposer, matcher, vocabulary=vocabulary, captioner=captioner,
                                       alpha=t.alpha, lam=t.lam, use_rectifier=t.rectifier,
                                       use_negatives=t.negatives, fill=t.fill, margin=t.margin,
                                       max_side=t.max_side, seg_model=seg_model, device=device)
    scores["seconds_per_expression"] = round(seconds, 3)
    write_json(METRICS / "tas.json", scores)
    log.info("TAS on %d expressions: mIoU %.2f, oIoU %.2f, %.2f s per expression", scores["n"], scores["miou"],
             scores["oiou"], seconds)
