"""How images become model input and logits full-size output: normalisation, upsampling, the input spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from handseg.model.io import InputSpec, to_pixel_values, upsample_logits
from handseg.runtime.config_schema import FieldError


def test_to_pixel_values_normalises_and_replicates():
    image = np.array([[0, 255]], dtype=np.uint8)
    x = to_pixel_values(image, (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    assert x.shape == (3, 1, 2) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([-1.0, -1.0, 0.0]))
    torch.testing.assert_close(x[:, 0, 1], torch.tensor([1.0, 3.0, 1.0]))
    with pytest.raises(ValueError):
        to_pixel_values(np.zeros((4, 4, 3), np.uint8), (0, 0, 0), (1, 1, 1))


def test_to_pixel_values_takes_read_only_memory_maps(tmp_path):
    path = tmp_path / "img.npy"
    np.save(path, np.arange(12, dtype=np.uint8).reshape(3, 4))
    view = np.load(path, mmap_mode="r")
    assert not view.flags.writeable
    torch.testing.assert_close(to_pixel_values(view, (0, 0, 0), (1, 1, 1))[0] * 255,
                               torch.arange(12, dtype=torch.float32).view(3, 4))


def test_upsample_logits_is_bilinear_and_float32():
    logits = torch.randn(2, 29, 8, 8, dtype=torch.float16)
    up = upsample_logits(logits, (32, 24))
    assert up.shape == (2, 29, 32, 24) and up.dtype == torch.float32
    expected = F.interpolate(logits.float(), size=(32, 24), mode="bilinear", align_corners=False)
    torch.testing.assert_close(up, expected)
    same = torch.randn(1, 29, 8, 8)
    assert upsample_logits(same, (8, 8)) is same


def test_input_spec_round_trip_and_checks():
    spec = InputSpec(mode="tile", image_size=512, tile_size=256, overlap=0.25)
    assert spec.model_size == 256 and InputSpec(mode="resize", image_size=384, tile_size=384).model_size == 384
    assert InputSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(FieldError) as err:
        InputSpec.from_dict({**spec.to_dict(), "overlap": 1.0})
    assert err.value.key == "overlap"


def test_logits_over_windows_is_the_upsampled_crop():
    """Sampling the whole-image logits over a crop equals upsampling them to the image and cropping (to float
    rounding), at full crop resolution and on a coarser grid of cell centres."""
    from handseg.model.io import logits_over_windows

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 29, 24, 24, generator=g)
    windows = torch.tensor([[10, 30, 96, 96], [50, 0, 96, 96]])
    full = upsample_logits(logits, (96, 96))
    got = logits_over_windows(logits, windows, crop=32, out=32)
    for b, (y0, x0, _, _) in enumerate(windows.tolist()):
        torch.testing.assert_close(got[b], full[b, :, y0:y0 + 32, x0:x0 + 32], rtol=0, atol=1e-5)
    coarse = logits_over_windows(logits, windows, crop=32, out=8)  # cell j's centre: native y0 + 4j + 1.5
    for b, (y0, x0, size, _) in enumerate(windows.tolist()):
        src = lambda start: ((start + 4 * torch.arange(8) + 1.5 + 0.5) * 24 / size - 0.5).clamp(0, 23)  # noqa: E731
        sy, sx = src(y0), src(x0)
        iy, ix = sy.floor().long().clamp(max=22), sx.floor().long().clamp(max=22)
        fy, fx = (sy - iy)[:, None], (sx - ix)[None, :]
        g = logits[b]
        expected = ((1 - fy) * (1 - fx) * g[:, iy][:, :, ix] + (1 - fy) * fx * g[:, iy][:, :, ix + 1]
                    + fy * (1 - fx) * g[:, iy + 1][:, :, ix] + fy * fx * g[:, iy + 1][:, :, ix + 1])
        torch.testing.assert_close(coarse[b], expected, rtol=0, atol=1e-5)


def test_logits_in_window_is_what_training_feeds_a_cascade_whatever_the_window():
    import torch
    import torch.nn.functional as F

    from handseg.model.io import logits_in_window, logits_over_windows

    prior = torch.randn(29, 24, 20, generator=torch.Generator().manual_seed(0))
    window = logits_in_window(prior, (300, 250), (40, 60, 168, 188))  # a 128 px crop at (40, 60)
    trained = logits_over_windows(prior[None], torch.tensor([[40, 60, 300, 250]]), 128, 128)[0]
    assert torch.equal(window, trained)
    inner = logits_in_window(prior, (300, 250), (50, 100, 90, 101))  # a window of the window: the same pixels
    assert torch.equal(inner, window[:, 10:50, 40:41])
    full = F.interpolate(prior[None], size=(300, 250), mode="bilinear", align_corners=False)[0]
    assert (window - full[:, 40:168, 60:188]).abs().max() < 1e-5  # the bilinear resize, up to float rounding
