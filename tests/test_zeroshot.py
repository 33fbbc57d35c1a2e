"""Dense zero-shot GradCAM baseline with tiny open_clip models and the imagenet stand-in."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from textwsss.guide.imagenet_matcher import ImageNetMatcher
from textwsss.guide.open_clip_matcher import OpenClipMatcher
from textwsss.guide.tiny import register_tiny_configs
from vocmini import CLASS_NAMES, image_path, labels_of_mask, mask_path, read_image, read_mask, readable
from textwsss.zeroshot.gradcam import zeroshot_cams

register_tiny_configs()
CONCEPTS = [readable(c) for c in CLASS_NAMES]


@pytest.mark.parametrize("arch", ["tiny-vit", "tiny-rn"])
def test_open_clip_cams_have_image_shape_and_range(arch):
    torch.manual_seed(0)
    matcher = OpenClipMatcher(arch, pretrained="none")
    image = (np.random.default_rng(0).random((37, 51, 3)) * 255).astype(np.uint8)
    cams = zeroshot_cams(matcher, image, [7, 11], CONCEPTS, ["tree", "sky"])
    assert cams.shape == (2, 37, 51) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
    for cam in cams:  # per-class max normalisation (an all-zero CAM is allowed for random weights)
        assert cam.max() == pytest.approx(1.0) or cam.max() == 0.0
    assert zeroshot_cams(matcher, image, [], CONCEPTS, []).shape == (0, 37, 51)
    with pytest.raises(ValueError, match="class_indices"):
        zeroshot_cams(matcher, image, [20], CONCEPTS, [])


# one image per class that ImageNet knows well; the CAM must put more mass inside the object
@pytest.mark.parametrize("image_id", ["2007_002760", "2008_001498", "2008_001876"])
def test_imagenet_cam_is_higher_inside_the_object(voc_mini, image_id):
    matcher = ImageNetMatcher()
    image = read_image(image_path(voc_mini, image_id))
    mask = read_mask(mask_path(voc_mini, image_id))
    classes = labels_of_mask(mask)
    assert {"cat", "dog"} & {CLASS_NAMES[k] for k in classes}
    cams = zeroshot_cams(matcher, image, classes, CONCEPTS, ["sea", "mountain", "building"])
    assert cams.shape == (len(classes), *image.shape[:2])
    assert cams.max() == pytest.approx(1.0)
    for cam, k in zip(cams, classes):
        if CLASS_NAMES[k] not in ("cat", "dog"):
            continue
        inside = cam[mask == k + 1].mean()
        outside = cam[(mask != k + 1) & (mask != 255)].mean()
        assert inside > 2 * outside, (CLASS_NAMES[k], inside, outside)
