"""Video-prediction metrics (MSE, MAE, SSIM, PSNR) on numpy arrays.

Inputs are ``(B, T, C, H, W)`` arrays with values in ``[0, 1]``.  The
definitions follow OpenSTL and the MindSpore ModelZoo ConvLSTM so that
numbers are comparable with their published tables:

* ``mse`` / ``mae``: error SUMMED over the pixels (and channels) of a frame,
  then averaged over frames.  This is why Moving-MNIST MSE is reported in the
  tens rather than around 0.01.
* ``ssim``: scikit-image ``structural_similarity`` per frame with its default
  window (7x7 uniform, sample covariance, K1=0.01, K2=0.03) and
  ``data_range=2.0``, which is what scikit-image <= 0.19 silently used for
  float images and hence what the published tables were computed with.
* ``psnr``: ``20 * log10(1 / sqrt(mse))`` per frame, with ``mse`` the
  per-pixel mean, capped at :data:`PSNR_CAP_DB`.

Predictions are clipped to ``[0, 1]`` before SSIM and PSNR (as OpenSTL does),
but not before MSE and MAE.  Everything is computed in float64 whatever the
input dtype.

Accumulating over a test set: every function returns the mean over the
``B * T`` frames it is given.  When a test set is evaluated batch by batch,
weight each batch result by its number of frames (the last batch is often
smaller); averaging per-batch means with equal weights is biased.
:class:`MetricAccumulator` does this weighting.
"""

import numpy as np
from scipy.ndimage import uniform_filter
from skimage.metrics import structural_similarity

SSIM_WIN_SIZE = 7
SSIM_DATA_RANGE = 2.0
SSIM_K1 = 0.01
SSIM_K2 = 0.03
PSNR_CAP_DB = 100.0
"""PSNR of a frame whose MSE is <= 1e-10, in particular of an exact frame.

Without a cap an exact frame gives +inf and poisons the mean.  Capping every
frame (not only MSE == 0) keeps PSNR monotonic in the error."""

_SSIM_CHUNK_PIXELS = 2**13  # per SSIM chunk: 64 KiB per float64 temporary


def _check_inputs(pred, true):
    """Return ``pred`` and ``true`` as float64 arrays, or raise ValueError.

    Both must be 5-D ``(B, T, C, H, W)`` with identical, non-empty shapes.
    """
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 5 or pred.size == 0:
        raise ValueError(
            "pred and true must be non-empty 5-D (B, T, C, H, W) arrays of the "
            f"same shape, got pred {pred.shape} and true {true.shape}"
        )
    return pred, true


def _clip01(x):
    """Clip to the valid intensity range, as done before SSIM and PSNR."""
    return np.clip(x, 0.0, 1.0)


def _frame_mse(pred, true):
    """Per-frame sum of squared errors, shape ``(B, T)``."""
    return np.sum((pred - true) ** 2, axis=(2, 3, 4))


def _frame_mae(pred, true):
    """Per-frame sum of absolute errors, shape ``(B, T)``."""
    return np.sum(np.abs(pred - true), axis=(2, 3, 4))


def _frame_psnr(pred, true):
    """Per-frame PSNR in dB for a peak value of 1.0, shape ``(B, T)``."""
    pixel_mse = np.mean((_clip01(pred) - true) ** 2, axis=(2, 3, 4))
    min_mse = 10.0 ** (-PSNR_CAP_DB / 10.0)
    return -10.0 * np.log10(np.maximum(pixel_mse, min_mse))


def _ssim_images(x, y):
    """Mean SSIM of each 2-D image in the ``(N, H, W)`` stacks ``x`` and ``y``.

    Vectorised equivalent of ``structural_similarity(x[i], y[i],
    data_range=2.0)``: the same uniform filter (size 1 along the stack axis)
    gives the local means for all images at once and the same
    ``(win_size - 1) // 2`` border is cropped.  Filtering x^2 + y^2 as one
    moment saves a fifth filter pass and only changes rounding (~1e-16).
    """
    win = SSIM_WIN_SIZE
    if min(x.shape[1:]) < win:
        raise ValueError(f"SSIM needs frames of at least {win}x{win}, got {x.shape[1:]}")
    pad = (win - 1) // 2

    def local_mean(a):
        return uniform_filter(a, size=(1, win, win))[:, pad:-pad, pad:-pad]

    ux, uy = local_mean(x), local_mean(y)
    u_sq_sum, uxy = local_mean(x * x + y * y), local_mean(x * y)

    cov_norm = win * win / (win * win - 1.0)  # sample covariance
    c1 = (SSIM_K1 * SSIM_DATA_RANGE) ** 2
    c2 = (SSIM_K2 * SSIM_DATA_RANGE) ** 2
    ux_uy = ux * uy
    ux2_uy2 = ux * ux + uy * uy
    numerator = (2 * ux_uy + c1) * (2 * cov_norm * (uxy - ux_uy) + c2)
    denominator = (ux2_uy2 + c1) * (cov_norm * (u_sq_sum - ux2_uy2) + c2)
    return (numerator / denominator).mean(axis=(1, 2))


def _frame_ssim(pred, true):
    """Per-frame SSIM, averaged over channels, shape ``(B, T)``.

    Images go through :func:`_ssim_images` a few at a time (about
    ``_SSIM_CHUNK_PIXELS`` pixels).  Small chunks measured up to 2x faster
    than large ones: every temporary stays in CPU cache and
    below glibc's 128 KiB mmap threshold, so no page faults per allocation.
    """
    b, t, c, h, w = pred.shape
    x = pred.reshape(-1, h, w)
    y = true.reshape(-1, h, w)
    step = max(1, _SSIM_CHUNK_PIXELS // (h * w))
    per_image = np.concatenate([
        _ssim_images(_clip01(x[i:i + step]), y[i:i + step])
        for i in range(0, len(x), step)
    ])
    return per_image.reshape(b, t, c).mean(axis=2)


_FRAME_METRICS = {
    "mse": _frame_mse,
    "mae": _frame_mae,
    "ssim": _frame_ssim,
    "psnr": _frame_psnr,
}


def _mean_metric(name, pred, true):
    """Mean of a per-frame metric over all ``B * T`` frames, as a float."""
    pred, true = _check_inputs(pred, true)
    return float(_FRAME_METRICS[name](pred, true).mean())


def mse(pred, true):
    """Sum of squared errors per frame, averaged over the ``B * T`` frames."""
    return _mean_metric("mse", pred, true)


def mae(pred, true):
    """Sum of absolute errors per frame, averaged over the ``B * T`` frames."""
    return _mean_metric("mae", pred, true)


def ssim(pred, true):
    """SSIM per frame (channel-averaged), averaged over the ``B * T`` frames.

    Vectorised; matches :func:`ssim_skimage` to floating-point precision.
    """
    return _mean_metric("ssim", pred, true)


def ssim_skimage(pred, true):
    """Reference SSIM: one scikit-image call per frame (slow).

    Same definition as :func:`ssim`; kept to validate the vectorised path.
    """
    pred, true = _check_inputs(pred, true)
    pred = _clip01(pred)
    b, t, c = pred.shape[:3]
    total = 0.0
    for i in range(b):
        for j in range(t):
            if c == 1:
                frames, channel_axis = (pred[i, j, 0], true[i, j, 0]), None
            else:
                frames, channel_axis = (pred[i, j], true[i, j]), 0
            total += structural_similarity(
                *frames, data_range=SSIM_DATA_RANGE, win_size=SSIM_WIN_SIZE,
                channel_axis=channel_axis,
            )
    return float(total / (b * t))


def psnr(pred, true):
    """PSNR per frame (peak 1.0, capped at PSNR_CAP_DB), averaged over frames."""
    return _mean_metric("psnr", pred, true)


def per_frame(metric_name, pred, true):
    """Metric at each lead time: array of shape ``(T,)``, mean over B.

    Useful to plot how a forecast degrades with the prediction horizon.
    """
    if metric_name not in _FRAME_METRICS:
        raise ValueError(f"unknown metric {metric_name!r}, expected one of {sorted(_FRAME_METRICS)}")
    pred, true = _check_inputs(pred, true)
    return _FRAME_METRICS[metric_name](pred, true).mean(axis=0)


def video_metrics(pred, true):
    """All four metrics as a dict of floats keyed "mse", "mae", "ssim", "psnr"."""
    pred, true = _check_inputs(pred, true)
    return {name: float(fn(pred, true).mean()) for name, fn in _FRAME_METRICS.items()}


class MetricAccumulator:
    """Frame-weighted running mean of :func:`video_metrics` over batches.

    ``update`` weights each batch by its ``B * T`` frames, so a smaller last
    batch counts exactly as much as its frames do.
    """

    def __init__(self):
        self._sums = {name: 0.0 for name in _FRAME_METRICS}
        self._frames = 0

    def update(self, pred, true):
        """Add one batch of ``(B, T, C, H, W)`` predictions and targets."""
        pred, true = _check_inputs(pred, true)
        for name, fn in _FRAME_METRICS.items():
            self._sums[name] += float(fn(pred, true).sum())
        self._frames += pred.shape[0] * pred.shape[1]

    def compute(self):
        """Mean of each metric over all frames seen so far."""
        if self._frames == 0:
            raise ValueError("MetricAccumulator.compute() called before any update()")
        return {name: total / self._frames for name, total in self._sums.items()}
