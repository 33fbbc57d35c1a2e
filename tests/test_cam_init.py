"""Where train_cam starts: the baseline CAM network of train_cam_baseline (one of our model.pt files) or IRN's
res50_cam.pth, the file the official CLIMS code fine-tunes, loaded strictly through a key mapping."""
import pytest
import torch
import torchvision
from torch import nn

from textwsss.data.classes import VOC
from textwsss.models.checkpoints import load_cam_weights, save_model
from textwsss.models.factory import build_cam_net


class IrnCamNet(nn.Module):
    """The module layout of IRN's net/resnet50_cam.py Net: its state_dict has IRN's official key names (the
    resnet50 modules under `resnet50.*` and again under `stage1..4.*`, and `classifier.weight`)."""

    def __init__(self):
        super().__init__()
        self.resnet50 = torchvision.models.resnet50(weights=None)
        self.resnet50.avgpool = None  # IRN's resnet50 has neither pooling nor fc
        self.resnet50.fc = None
        r = self.resnet50
        r.layer4[0].conv2.stride = (1, 1)  # strides (2, 2, 2, 1): layer 4 at stride 1, no dilation
        r.layer4[0].downsample[0].stride = (1, 1)
        self.stage1 = nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool, r.layer1)
        self.stage2 = nn.Sequential(r.layer2)
        self.stage3 = nn.Sequential(r.layer3)
        self.stage4 = nn.Sequential(r.layer4)
        self.classifier = nn.Conv2d(2048, 20, 1, bias=False)


@pytest.fixture(scope="module")
def irn_state():
    torch.manual_seed(0)
    net = IrnCamNet()
    with torch.no_grad():  # non-trivial statistics, so a wrong mapping shows
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = net.state_dict()
    assert "stage1.0.weight" in state and "resnet50.conv1.weight" in state and "stage4.0.2.conv3.weight" in state
    return state


def _cam_net():
    return build_cam_net(backbone="resnet50", pretrained="none", num_classes=20, dilate=False)


def test_irn_res50_cam_loads_strictly(irn_state, tmp_path):
    path = tmp_path / "res50_cam.pth"
    torch.save(irn_state, path)
    model = _cam_net()
    assert load_cam_weights(model, path) == "irn"
    ours = model.state_dict()
    assert torch.equal(ours["backbone.conv1.weight"], irn_state["resnet50.conv1.weight"])
    assert torch.equal(ours["backbone.layer4.2.bn3.running_var"], irn_state["resnet50.layer4.2.bn3.running_var"])
    assert torch.equal(ours["classifier.weight"], irn_state["classifier.weight"])
    loaded = sum(k.startswith(("backbone.", "classifier.")) for k in ours)
    assert loaded == sum(k.startswith(("resnet50.", "classifier")) for k in irn_state)
    # the network computes what IRN's would: its layer 4 keeps stride 1 without dilation, like IRN's
    x = torch.rand(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        r = IrnCamNet()
        r.load_state_dict(irn_state)
        r.eval()
        z = r.stage4(r.stage3(r.stage2(r.stage1((x - model.normalize.mean) / model.normalize.std))))
        torch.testing.assert_close(model(x), r.classifier(z))


def test_irn_checkpoint_from_dataparallel_and_state_dict_wrapper(irn_state, tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in irn_state.items()}}, path)
    assert load_cam_weights(_cam_net(), path) == "irn"


@pytest.mark.parametrize("damage, words", [
    (lambda s: s.pop("resnet50.layer3.1.conv2.weight"), "missing 'backbone.layer3.1.conv2.weight'"),
    (lambda s: s.__setitem__("extra.head.weight", torch.zeros(1)), "unexpected key 'extra.head.weight'"),
    (lambda s: s.__setitem__("classifier.weight", torch.zeros(80, 2048, 1, 1)), "shape (80, 2048, 1, 1)"),
])
def test_mismatched_irn_checkpoints_are_refused_with_the_key(irn_state, tmp_path, damage, words):
    state = dict(irn_state)
    damage(state)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as err:
        load_cam_weights(_cam_net(), tmp_path / "bad.pth")
    assert words in str(err.value) and "bad.pth" in str(err.value)


def test_our_baseline_model_file_loads_into_the_same_architecture(tmp_path):
    torch.manual_seed(1)
    baseline = build_cam_net(pretrained="none", num_classes=20)
    save_model(tmp_path / "model.pt", baseline, VOC, stage="train_cam_baseline")
    fresh = build_cam_net(pretrained="none", num_classes=20)
    assert load_cam_weights(fresh, tmp_path / "model.pt") == "textwsss"
    for k, v in baseline.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    with pytest.raises(ValueError, match="expected"):
        load_cam_weights(build_cam_net(backbone="resnet50", pretrained="none", num_classes=20), tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="cam.init_checkpoint"):
        load_cam_weights(fresh, tmp_path / "nope.pth")
