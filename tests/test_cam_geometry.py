"""make_cam's IRN options against plain references written here: the stride-4 maps of the random walk (IRN's
`cam`), IRN's CAM geometry (upsample to a multiple of 16, crop the top-left), PIL resizing of the 8-bit image, and
the CAM file's `cams_s4` array."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from textwsss.cam import (load_cam, load_cam_strided, multiscale_cams, multiscale_cams_strided, resize_map,
                          save_cam, strided_size, strided_up_size)
from textwsss.data.transforms import pil_resize_images, to_tensor
from textwsss.pipeline import make_cam
from textwsss.pipeline.resumable import ResumableFolder


def _net() -> torch.nn.Module:
    """A tiny CAM network at stride 16 (no BatchNorm: make_cam runs it as it is)."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 20, 3, stride=4, padding=1)).eval()


def _maps(net, x: torch.Tensor, keys, flip: bool) -> torch.Tensor:
    """ReLU(net(x)) of the labelled classes plus its flip's, flipped back (IRN's CAM.forward)."""
    with torch.no_grad():
        m = F.relu(net(x[None]))[0, keys]
        if flip:
            m = m + F.relu(net(x.flip(-1)[None]))[0, keys].flip(-1)
    return m


def _max_normalised(t: torch.Tensor) -> torch.Tensor:
    return t / t.flatten(1).max(1).values.clamp_min(1e-5)[:, None, None]


# ---- sizes ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, stride, expected", [((37, 50), 4, (10, 13)), ((36, 48), 4, (9, 12)),
                                                    ((375, 500), 4, (94, 125)), ((1, 1), 4, (1, 1)),
                                                    ((33, 16), 16, (3, 1))])
def test_strided_size_rounds_up(size, stride, expected):
    assert strided_size(size, stride) == expected


def test_strided_up_size_is_a_multiple_of_the_stride_at_least_the_size():
    assert strided_up_size((37, 50), 16) == (48, 64)
    assert strided_up_size((32, 17), 16) == (32, 32)
    assert strided_up_size((375, 500), 16) == (384, 512)


# ---- stride-4 maps ---------------------------------------------------------------------------------------------

def test_stride4_maps_against_a_plain_loop_over_scales():
    net = _net()
    torch.manual_seed(1)
    images = torch.rand(2, 3, 37, 50)  # odd sizes: ceil(37/4) = 10, ceil(50/4) = 13
    keys = [[1], [4, 17]]
    scales = [1.0, 0.5, 1.5]
    s4 = [(10, 13), (10, 13)]
    full, strided = multiscale_cams_strided(net, images, keys, s4, scales, flip=True)
    for i in range(2):
        total = torch.zeros(len(keys[i]), 10, 13)
        for s in scales:
            x = images[i] if s == 1.0 else F.interpolate(images[i][None], size=(round(37 * s), round(50 * s)),
                                                         mode="bilinear", align_corners=False)[0]
            total += F.interpolate(_maps(net, x, keys[i], True)[None], size=(10, 13), mode="bilinear",
                                   align_corners=False)[0]
        expected = _max_normalised(total)
        assert strided[i].shape == (len(keys[i]), 10, 13)
        torch.testing.assert_close(strided[i], expected, atol=1e-5, rtol=0)
        assert strided[i].flatten(1).max(1).values.tolist() == pytest.approx([1.0] * len(keys[i]), abs=1e-5)
        # the full-resolution maps are those multiscale_cams makes
        torch.testing.assert_close(full[i], multiscale_cams(net, images, keys, scales)[i])


def test_stride4_maps_are_not_the_full_maps_pooled():
    """IRN resizes each scale's network map to the stride-4 grid; shrinking the full-resolution CAM instead is a
    different map, by far more than the plain-loop test's tolerance (1e-5)."""
    net = _net()
    torch.manual_seed(4)
    images = torch.rand(1, 3, 37, 50)
    keys = [list(range(20))]
    full, strided = multiscale_cams_strided(net, images, keys, [(10, 13)], [1.0, 0.5], flip=False)
    assert strided[0].amax() > 0.99  # some class is active
    pooled = _max_normalised(F.interpolate(full[0][None], size=(10, 13), mode="bilinear", align_corners=False)[0])
    assert (strided[0] - pooled).abs().max() > 1e-3


# ---- IRN geometry ----------------------------------------------------------------------------------------------

def test_irn_geometry_of_one_map_by_hand():
    """A 1 x 2 map [0, 1] to a 1 x 20 image. irn: bilinear (half-pixel centres) to the 16-multiple 32, then the
    first 20 columns: column j samples source x = (j + 0.5) / 16 - 0.5, clamped to [0, 1]. stretch: to 20
    columns, x = (j + 0.5) / 10 - 0.5."""
    m = torch.tensor([[[0.0, 1.0]]])
    irn = resize_map(m, (1, 20), "irn")[0, 0]
    stretch = resize_map(m, (1, 20), "stretch")[0, 0]
    j = np.arange(20)
    np.testing.assert_allclose(irn.numpy(), np.clip((j + 0.5) / 16 - 0.5, 0, 1), atol=1e-6)
    np.testing.assert_allclose(stretch.numpy(), np.clip((j + 0.5) / 10 - 0.5, 0, 1), atol=1e-6)
    assert irn[-1] == pytest.approx(0.71875)  # the map's last cell lies partly past the image's edge
    with pytest.raises(ValueError, match="geometry"):
        resize_map(m, (1, 20), "crop")


def test_irn_geometry_against_a_plain_loop():
    net = _net()
    torch.manual_seed(2)
    images = torch.rand(1, 3, 37, 50)
    keys, scales = [[0, 5]], [1.0, 0.5, 2.0]
    cams = multiscale_cams(net, images, keys, scales, flip=True, geometry="irn")[0]
    total = torch.zeros(2, 37, 50)
    for s in scales:
        x = images[0] if s == 1.0 else F.interpolate(images[0][None], size=(round(37 * s), round(50 * s)),
                                                     mode="bilinear", align_corners=False)[0]
        up = F.interpolate(_maps(net, x, keys[0], True)[:, None], size=(48, 64), mode="bilinear",
                           align_corners=False)[:, 0]
        total += up[:, :37, :50]
    torch.testing.assert_close(cams, _max_normalised(total), atol=1e-5, rtol=0)
    stretch = multiscale_cams(net, images, keys, scales, flip=True)[0]
    assert (cams - stretch).abs().max() > 1e-2  # the option is not ignored


# ---- PIL resizing ----------------------------------------------------------------------------------------------

def _u8(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("interpolation, pil_filter", [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)])
def test_pil_resize_is_pil_on_the_8bit_image(interpolation, pil_filter):
    u8 = _u8(37, 50)
    out = pil_resize_images(to_tensor(u8)[None], (19, 25), interpolation)[0]
    expected = np.asarray(Image.fromarray(u8).resize((25, 19), pil_filter))
    np.testing.assert_array_equal((out * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(), expected)
    # antialiased: shrinking random noise by 2 averages it far more than F.interpolate's 4-tap bicubic does
    torch_out = F.interpolate(to_tensor(u8)[None], size=(19, 25), mode="bicubic", align_corners=False)[0]
    assert out.std() < 0.8 * torch_out.clamp(0, 1).std()


def test_pil_resize_reaches_the_cams():
    net = _net()
    u8 = _u8(37, 50, seed=3)
    image = to_tensor(u8)[None]
    keys, scales = [[3]], [1.0, 0.5, 1.5]
    cams = multiscale_cams(net, image, keys, scales, flip=True, interpolation="bicubic", resize="pil")[0]
    total = torch.zeros(1, 37, 50)
    for s in scales:
        size = (round(37 * s), round(50 * s))
        x = to_tensor(u8 if s == 1.0 else np.array(Image.fromarray(u8).resize(size[::-1], Image.BICUBIC)))
        total += F.interpolate(_maps(net, x, keys[0], True)[None], size=(37, 50), mode="bilinear",
                               align_corners=False)[0]
    torch.testing.assert_close(cams, _max_normalised(total), atol=1e-5, rtol=0)
    default = multiscale_cams(net, image, keys, scales, flip=True, interpolation="bicubic")[0]
    assert (cams - default).abs().max() > 1e-3


# ---- the CAM file ----------------------------------------------------------------------------------------------

def test_make_cam_writes_irn_make_cam_outputs(voc_data, tmp_path):
    """make_cam with IRN's options (no max_side) against IRN's make_cam.py written out plainly here: `cams` is
    IRN's `high_res`, `cams_s4` its `cam`."""
    net = _net()
    ids = voc_data.ids("train")[:2]
    out = ResumableFolder(tmp_path / "cams", {"v": 1}, ".npz")
    out.open()
    scales = [1.0, 0.5]
    make_cam.make_cams(net, voc_data, ids, out, scales=scales, flip=True, max_side=0, batch_size=2,
                       interpolation="bicubic", geometry="irn", resize="pil")
    for i in ids:
        u8 = voc_data.read_image(i)
        h, w = u8.shape[:2]
        keys = voc_data.labels[i]
        s4, up = ((h + 3) // 4, (w + 3) // 4), (-(-h // 16) * 16, -(-w // 16) * 16)
        strided, high = torch.zeros(len(keys), *s4), torch.zeros(len(keys), *up)
        for s in scales:
            size = (round(h * s), round(w * s))
            x = to_tensor(u8 if s == 1.0 else np.array(Image.fromarray(u8).resize(size[::-1], Image.BICUBIC)))
            o = _maps(net, x, keys, True)
            strided += F.interpolate(o[None], s4, mode="bilinear", align_corners=False)[0]
            high += F.interpolate(o[:, None], up, mode="bilinear", align_corners=False)[:, 0]
        high = high[:, :h, :w]
        strided /= strided.flatten(1).max(1).values[:, None, None] + 1e-5
        high /= high.flatten(1).max(1).values[:, None, None] + 1e-5
        cams, file_keys = load_cam(out.path(i))
        cams_s4, s4_keys = load_cam_strided(out.path(i))
        assert file_keys.tolist() == s4_keys.tolist() == keys
        assert cams.shape == (len(keys), h, w) and cams_s4.shape == (len(keys), *s4)
        np.testing.assert_allclose(cams, high.numpy(), atol=2e-3)  # float16 in the file
        np.testing.assert_allclose(cams_s4, strided.numpy(), atol=2e-3)


def test_cam_file_round_trip_and_an_old_file_names_itself(tmp_path):
    cams = np.random.default_rng(0).random((2, 9, 11)).astype(np.float32)
    s4 = np.random.default_rng(1).random((2, 3, 3)).astype(np.float32)
    save_cam(tmp_path / "new.npz", cams, [3, 7], s4)
    got, keys = load_cam_strided(tmp_path / "new.npz")
    np.testing.assert_array_equal(got, s4.astype(np.float16).astype(np.float32))
    assert keys.tolist() == [3, 7] and got.dtype == np.float32
    assert (tmp_path / "new.npz").read_bytes()[:2] == b"PK"
    # in memory (what make_cam hashes) the same bytes as on disk
    assert make_cam.cam_bytes(cams, [3, 7], s4) == (tmp_path / "new.npz").read_bytes()
    save_cam(tmp_path / "old.npz", cams, [3, 7])
    np.testing.assert_array_equal(load_cam(tmp_path / "old.npz")[0], load_cam(tmp_path / "new.npz")[0])
    with pytest.raises(ValueError, match=r"old\.npz.*older make_cam; rerun make_cam"):
        load_cam_strided(tmp_path / "old.npz")
    with pytest.raises(FileNotFoundError, match="gone.npz"):
        load_cam_strided(tmp_path / "gone.npz")


def test_working_size_downscale_follows_the_resize_option(voc_data):
    """With max_side, the image is first brought to its working size: by PIL on the 8-bit image (resize pil),
    or by bilinear F.interpolate on the float image (torch, as before the option)."""
    i = voc_data.ids("train")[0]
    u8 = voc_data.read_image(i)
    size, work = u8.shape[:2], (u8.shape[0] // 3, u8.shape[1] // 3)
    pil = make_cam._working_image(voc_data, i, work, size, "pil", "bicubic")
    np.testing.assert_array_equal((pil * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(),
                                  np.asarray(Image.fromarray(u8).resize(work[::-1], Image.BICUBIC)))
    plain = make_cam._working_image(voc_data, i, work, size, "torch", "bicubic")
    torch.testing.assert_close(plain, F.interpolate(to_tensor(u8)[None], size=work, mode="bilinear",
                                                    align_corners=False)[0], atol=0, rtol=0)
