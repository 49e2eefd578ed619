"""Tests for msforge.metrics against independent loop-based computations."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from msforge import metrics
from msforge.metrics import (
    MetricAccumulator,
    mae,
    mse,
    per_frame,
    psnr,
    ssim,
    ssim_skimage,
    video_metrics,
)


# ---------------------------------------------------------------- helpers --

def _random_pair(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(shape), rng.random(shape)


def _moving_mnist_like(b, t, size=64, seed=0):
    """Sparse frames: mostly zeros with a few soft 'digit' blobs.

    Frame (0, 0) is all-zero in both arrays and frame (0, 1) is all-zero in
    ``true`` only, to cover the degenerate zero-variance cases.
    """
    rng = np.random.default_rng(seed)
    true = np.zeros((b, t, 1, size, size))
    for i in range(b):
        for j in range(t):
            for _ in range(2):
                y, x = rng.integers(0, size - 14, size=2)
                true[i, j, 0, y:y + 14, x:x + 14] = rng.random((14, 14)) > 0.6
    true = gaussian_filter(true, sigma=(0, 0, 0, 0.7, 0.7))
    pred = gaussian_filter(true, sigma=(0, 0, 0, 1.5, 1.5)) + rng.normal(0, 0.02, true.shape)
    true[0, 0] = 0.0
    pred[0, 0] = 0.0
    true[0, 1] = 0.0
    return pred, true


def _loop_ssim_frames(pred, true):
    """SSIM of every (b, t) frame with one scikit-image call each, shape (B, T)."""
    pred = np.clip(pred, 0, 1)
    out = np.empty(pred.shape[:2])
    for i in range(pred.shape[0]):
        for j in range(pred.shape[1]):
            if pred.shape[2] == 1:
                out[i, j] = structural_similarity(pred[i, j, 0], true[i, j, 0], data_range=2.0)
            else:
                # channels-last, as OpenSTL feeds scikit-image
                out[i, j] = structural_similarity(
                    pred[i, j].transpose(1, 2, 0), true[i, j].transpose(1, 2, 0),
                    data_range=2.0, channel_axis=-1,
                )
    return out


def _loop_frames(fn, pred, true):
    """Apply ``fn(pred_frame, true_frame)`` to every (b, t) frame, shape (B, T)."""
    return np.array([[fn(p, t) for p, t in zip(pb, tb)] for pb, tb in zip(pred, true)])


# ------------------------------------------------------------ mse and mae --

def test_mse_mae_match_loop_over_frames():
    pred, true = _random_pair((2, 3, 2, 8, 9))
    pred = pred * 1.4 - 0.2  # out of range on purpose: MSE/MAE do not clip
    assert mse(pred, true) == pytest.approx(
        _loop_frames(lambda p, t: ((p - t) ** 2).sum(), pred, true).mean(), rel=1e-12)
    assert mae(pred, true) == pytest.approx(
        _loop_frames(lambda p, t: np.abs(p - t).sum(), pred, true).mean(), rel=1e-12)


def test_black_prediction_error_equals_pixel_sum():
    rng = np.random.default_rng(1)
    true = (rng.random((1, 2, 1, 16, 16)) > 0.8).astype(np.float64)
    black = np.zeros_like(true)
    counts = true.sum(axis=(2, 3, 4))  # binary image: squared error == pixel value
    assert mse(black, true) == pytest.approx(counts.mean())
    assert mae(black, true) == pytest.approx(counts.mean())


def test_returns_python_floats():
    pred, true = _random_pair((1, 2, 1, 8, 8))
    for fn in (mse, mae, ssim, psnr, ssim_skimage):
        assert type(fn(pred, true)) is float


# ------------------------------------------------------------------- psnr --

def test_psnr_matches_loop_over_frames():
    pred, true = _random_pair((2, 3, 2, 8, 8), seed=2)
    expected = _loop_frames(
        lambda p, t: 20 * np.log10(1 / np.sqrt(np.mean((p - t) ** 2))), pred, true)
    assert psnr(pred, true) == pytest.approx(expected.mean(), rel=1e-12)


def test_psnr_known_value_and_exact_frame_cap():
    true = np.full((1, 2, 1, 8, 8), 0.5)
    pred = true.copy()
    pred[0, 1] += 0.1  # per-pixel MSE 0.01 -> 20 dB
    assert per_frame("psnr", pred, true) == pytest.approx([metrics.PSNR_CAP_DB, 20.0])
    assert psnr(true, true) == metrics.PSNR_CAP_DB


def test_psnr_clips_prediction():
    true = np.full((1, 1, 1, 8, 8), 1.0)
    over = np.full_like(true, 1.5)  # clips to exactly ``true``
    assert psnr(over, true) == metrics.PSNR_CAP_DB


# ------------------------------------------------------------------- ssim --

def test_ssim_identical_is_one():
    _, true = _random_pair((2, 2, 3, 16, 16))
    assert ssim(true, true) == pytest.approx(1.0, abs=1e-12)


def test_ssim_constant_images_closed_form():
    # Zero local variance leaves only the luminance term (2ab + C1) / (a^2 + b^2 + C1);
    # C1 = (0.01 * data_range)^2 checks that data_range is 2.0.
    a, b, c1 = 0.5, 0.25, (0.01 * 2.0) ** 2
    pred = np.full((1, 1, 1, 10, 10), a)
    true = np.full_like(pred, b)
    assert ssim(pred, true) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), abs=1e-9)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_skimage_loop_on_random_data(channels):
    pred, true = _random_pair((2, 3, channels, 20, 17), seed=3)
    expected = _loop_ssim_frames(pred, true).mean()
    assert ssim(pred, true) == pytest.approx(expected, abs=1e-6)
    assert ssim_skimage(pred, true) == pytest.approx(expected, abs=1e-12)


def test_ssim_matches_skimage_per_frame_on_sparse_frames():
    pred, true = _moving_mnist_like(1, 6)
    expected = _loop_ssim_frames(pred, true)[0]
    assert np.abs(per_frame("ssim", pred, true) - expected).max() < 1e-6
    assert ssim(pred, true) == pytest.approx(ssim_skimage(pred, true), abs=1e-6)
    assert expected[0] == pytest.approx(1.0)  # both frames all-zero


def test_ssim_chunking_does_not_change_result(monkeypatch):
    pred, true = _random_pair((3, 3, 2, 9, 9), seed=4)
    expected = ssim(pred, true)
    monkeypatch.setattr(metrics, "_SSIM_CHUNK_PIXELS", 4 * 9 * 9)  # 18 images -> 5 chunks
    assert ssim(pred, true) == pytest.approx(expected, abs=1e-12)


def test_ssim_clips_prediction():
    pred, true = _random_pair((1, 2, 1, 12, 12), seed=5)
    pred = pred * 2 - 0.5
    clipped = np.clip(pred, 0, 1)
    unclipped = np.mean([structural_similarity(p[0], t[0], data_range=2.0)
                         for p, t in zip(pred[0], true[0])])
    assert ssim(pred, true) == pytest.approx(ssim(clipped, true), abs=1e-12)
    assert ssim_skimage(pred, true) == pytest.approx(ssim(clipped, true), abs=1e-6)
    assert abs(ssim(pred, true) - unclipped) > 1e-3


def test_ssim_float32_input_matches_float64():
    pred, true = _random_pair((1, 2, 1, 16, 16), seed=6)
    assert ssim(pred.astype(np.float32), true.astype(np.float32)) == pytest.approx(
        ssim(pred.astype(np.float32).astype(np.float64),
             true.astype(np.float32).astype(np.float64)), abs=1e-12)


# ------------------------------------------- per_frame, dict, accumulation --

@pytest.mark.parametrize("name", ["mse", "mae", "ssim", "psnr"])
def test_per_frame_is_mean_over_batch_at_each_lead_time(name):
    pred, true = _random_pair((3, 4, 1, 10, 10), seed=7)
    single = {"mse": mse, "mae": mae, "ssim": ssim, "psnr": psnr}[name]
    curve = per_frame(name, pred, true)
    assert curve.shape == (4,)
    for t in range(4):
        assert curve[t] == pytest.approx(single(pred[:, t:t + 1], true[:, t:t + 1]), rel=1e-12)


def test_video_metrics_dict_matches_individual_functions():
    pred, true = _random_pair((2, 2, 1, 12, 12), seed=8)
    result = video_metrics(pred, true)
    assert set(result) == {"mse", "mae", "ssim", "psnr"}
    for name, fn in [("mse", mse), ("mae", mae), ("ssim", ssim), ("psnr", psnr)]:
        assert result[name] == pytest.approx(fn(pred, true), rel=1e-12)


def test_accumulator_weights_batches_by_frames():
    pred, true = _moving_mnist_like(4, 3, size=16, seed=9)
    acc = MetricAccumulator()
    acc.update(pred[:3], true[:3])
    acc.update(pred[3:], true[3:])  # smaller last batch
    whole = video_metrics(pred, true)
    naive = (mse(pred[:3], true[:3]) + mse(pred[3:], true[3:])) / 2
    result = acc.compute()
    for name in whole:
        assert result[name] == pytest.approx(whole[name], rel=1e-12)
    assert abs(naive - whole["mse"]) > 1e-3  # equal-weight averaging would be wrong here


def test_accumulator_compute_before_update_raises():
    with pytest.raises(ValueError, match="before any update"):
        MetricAccumulator().compute()


# ------------------------------------------------------------ bad inputs --

@pytest.mark.parametrize("fn", [mse, mae, ssim, psnr, ssim_skimage, video_metrics])
def test_shape_mismatch_names_both_shapes(fn):
    with pytest.raises(ValueError) as info:
        fn(np.zeros((1, 2, 1, 8, 8)), np.zeros((1, 3, 1, 8, 8)))
    message = str(info.value)
    assert "(1, 2, 1, 8, 8)" in message and "(1, 3, 1, 8, 8)" in message
    assert "\n" not in message


def test_non_5d_input_raises():
    with pytest.raises(ValueError, match=r"5-D.*\(2, 8, 8\)"):
        mse(np.zeros((2, 8, 8)), np.zeros((2, 8, 8)))


def test_empty_input_raises():
    with pytest.raises(ValueError, match="non-empty"):
        mse(np.zeros((0, 2, 1, 8, 8)), np.zeros((0, 2, 1, 8, 8)))


def test_ssim_frame_smaller_than_window_raises():
    with pytest.raises(ValueError, match="7x7"):
        ssim(np.zeros((1, 1, 1, 6, 8)), np.zeros((1, 1, 1, 6, 8)))


def test_per_frame_unknown_metric_raises():
    with pytest.raises(ValueError, match="unknown metric 'lpips'"):
        per_frame("lpips", np.zeros((1, 1, 1, 8, 8)), np.zeros((1, 1, 1, 8, 8)))
