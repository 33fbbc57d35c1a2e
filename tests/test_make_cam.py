"""make_cam's streaming stage: files written by an interrupted run are kept and the rest computed, split across
processes or not, always to the same bytes."""
import pytest
import torch

from textwsss.cam import load_cam, load_cam_strided
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
    make_cam.make_cams(model, voc_data, ids or _ids(voc_data), out, **{**SETTINGS, **kw})
    return out


def _bytes(folder, ids):
    return {i: (folder / f"{i}.npz").read_bytes() for i in ids}


def _folder(folder):
    """Every file of a folder (hidden ones too: stamp, manifest) by name, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_cams_are_at_image_size_and_cover_the_labels(model, voc_data, tmp_path):
    ids = _ids(voc_data)
    _run(model, voc_data, tmp_path / "a")
    for i in ids:
        cams, keys = load_cam(tmp_path / "a" / f"{i}.npz")
        assert cams.shape[1:] == voc_data.read_image(i).shape[:2]
        assert keys.tolist() == voc_data.labels[i] and 0 <= cams.min() and cams.max() <= 1.001
        # the random walk's stride-4 maps: ceil(H/4) x ceil(W/4) of the original image, whatever max_side
        h, w = cams.shape[1:]
        cams_s4, _ = load_cam_strided(tmp_path / "a" / f"{i}.npz")
        assert cams_s4.shape == (len(keys), -(-h // 4), -(-w // 4)) and cams_s4.max() <= 1.001


def test_interrupted_run_resumes_to_the_same_bytes(model, voc_data, tmp_path, monkeypatch):
    ids = _ids(voc_data)
    _run(model, voc_data, tmp_path / "whole")
    ResumableFolder(tmp_path / "whole", {"v": 1}, ".npz").finish(ids)
    real_bytes, made = make_cam.cam_bytes, []

    def dies_after_three(cams, keys, *strided):
        if len(made) == 3:
            raise KeyboardInterrupt("killed")
        made.append(1)
        return real_bytes(cams, keys, *strided)

    monkeypatch.setattr(make_cam, "cam_bytes", dies_after_three)
    with pytest.raises(KeyboardInterrupt):
        _run(model, voc_data, tmp_path / "killed")
    monkeypatch.setattr(make_cam, "cam_bytes", real_bytes)
    assert len(list((tmp_path / "killed").glob("*.npz"))) == 3
    # the kill also tore the journal's last line: that file is then unlisted, so it is recomputed, not trusted
    journal = next((tmp_path / "killed").glob(".journal.*.jsonl"))
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:2]) + "\n" + lines[2][:15])
    resumed = ResumableFolder(tmp_path / "killed", {"v": 1}, ".npz")
    assert resumed.open() == 2
    written = make_cam.make_cams(model, voc_data, ids, resumed, **SETTINGS)
    assert written == len(ids) - 2
    resumed.finish(ids)
    assert _folder(tmp_path / "killed") == _folder(tmp_path / "whole")


def test_split_across_processes_gives_the_same_files(model, voc_data, tmp_path):
    ids = _ids(voc_data)
    _run(model, voc_data, tmp_path / "one")
    out = ResumableFolder(tmp_path / "two", {"v": 1}, ".npz")
    out.open()
    counts = [make_cam.make_cams(model, voc_data, ids, out, **SETTINGS, rank=r, world=2) for r in (0, 1)]
    assert sum(counts) == len(ids) and min(counts) > 0
    assert _bytes(tmp_path / "two", ids) == _bytes(tmp_path / "one", ids)
    # each process journals what it wrote; the manifest they fold into is that of the one-process run
    ResumableFolder(tmp_path / "one", {"v": 1}, ".npz").finish(ids)
    out.finish(ids)
    assert _folder(tmp_path / "two") == _folder(tmp_path / "one")


def test_other_inputs_start_an_empty_folder_and_stale_files_go(model, voc_data, tmp_path):
    ids = _ids(voc_data)
    _run(model, voc_data, tmp_path / "a")  # flip on
    stale = _bytes(tmp_path / "a", ids[:2])
    # other inputs (here: no flip, so every CAM differs): nothing of the first run may be kept
    out = _run(model, voc_data, tmp_path / "a", ids=ids[:2], stamp={"v": 2}, flip=False)
    out.finish(ids[:2])
    fresh = _run(model, voc_data, tmp_path / "fresh", ids=ids[:2], stamp={"v": 2}, flip=False)
    fresh.finish(ids[:2])
    assert all(stale[i] != b for i, b in _bytes(tmp_path / "fresh", ids[:2]).items())  # a kept file would show
    assert _folder(tmp_path / "a") == _folder(tmp_path / "fresh")
    assert sorted(p.stem for p in (tmp_path / "a").glob("*.npz")) == sorted(ids[:2])
