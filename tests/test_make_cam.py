"""make_cam's streaming stage: files written by an interrupted run are kept and the rest computed, split across
processes or not, always to the same bytes."""
import pytest
import torch

from textwsss.cam import load_cam
from textwsss.models.factory import build_cam_net
from textwsss.pipeline import make_cam
from textwsss.pipeline.resumable import ResumableFolder

SETTINGS = dict(scales=[1.0, 0.5], flip=True, max_side=96, batch_size=2, max_pixels=0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_cam_net(pretrained="none", num_classes=20).eval()


def _ids(voc_data):
    return voc_data.ids("train")[:7]


def _run(model, voc_data, folder, ids=None, stamp=None, **kw) -> ResumableFolder:
    out = ResumableFolder(folder, stamp or {"v": 1}, ".npz")
    out.open()
    make_cam.make_cams(model, voc_data, ids or _ids(voc_data), out, **SETTINGS, **kw)
    return out


def _bytes(folder, ids):
    return {i: (folder / f"{i}.npz").read_bytes() for i in ids}


def test_cams_are_at_image_size_and_cover_the_labels(model, voc_data, tmp_path):
    ids = _ids(voc_data)
    _run(model, voc_data, tmp_path / "a")
    for i in ids:
        cams, keys = load_cam(tmp_path / "a" / f"{i}.npz")
        assert cams.shape[1:] == voc_data.read_image(i).shape[:2]
        assert keys.tolist() == voc_data.labels[i] and 0 <= cams.min() and cams.max() <= 1.001


def test_interrupted_run_resumes_to_the_same_bytes(model, voc_data, tmp_path, monkeypatch):
    ids = _ids(voc_data)
    _run(model, voc_data, tmp_path / "whole")
    real_save, saved = make_cam.save_cam, []

    def dies_after_three(path, cams, keys):
        if len(saved) == 3:
            raise KeyboardInterrupt("killed")
        real_save(path, cams, keys)
        saved.append(path)

    monkeypatch.setattr(make_cam, "save_cam", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        _run(model, voc_data, tmp_path / "killed")
    monkeypatch.setattr(make_cam, "save_cam", real_save)
    assert len(list((tmp_path / "killed").glob("*.npz"))) == 3
    resumed = ResumableFolder(tmp_path / "killed", {"v": 1}, ".npz")
    assert resumed.open() == 3
    written = make_cam.make_cams(model, voc_data, ids, resumed, **SETTINGS)
    assert written == len(ids) - 3
    assert _bytes(tmp_path / "killed", ids) == _bytes(tmp_path / "whole", ids)


def test_split_across_processes_gives_the_same_files(model, voc_data, tmp_path):
    ids = _ids(voc_data)
    _run(model, voc_data, tmp_path / "one")
    out = ResumableFolder(tmp_path / "two", {"v": 1}, ".npz")
    out.open()
    counts = [make_cam.make_cams(model, voc_data, ids, out, **SETTINGS, rank=r, world=2) for r in (0, 1)]
    assert sum(counts) == len(ids) and min(counts) > 0
    assert _bytes(tmp_path / "two", ids) == _bytes(tmp_path / "one", ids)


def test_other_inputs_start_an_empty_folder_and_stale_files_go(model, voc_data, tmp_path):
    ids = _ids(voc_data)
    _run(model, voc_data, tmp_path / "a")
    out = _run(model, voc_data, tmp_path / "a", ids=ids[:2], stamp={"v": 2})
    out.finish(ids[:2])
    assert sorted(p.stem for p in (tmp_path / "a").glob("*.npz")) == sorted(ids[:2])
