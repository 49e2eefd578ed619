"""The SSIM loss term's cost (issues 16 and 15): models.base.ssim_of_frames, whose 7x7 window means are a 1x7 average
pool followed by a 7x1 one over the frames laid out as the channels of one image (``models.base.valid_window_mean``),
against the same function given two earlier versions of the window means: the same two pools over the frames laid
out as a batch of one-channel images (``batch``, before 2026-12-08), and one 7x7 ``ops.avg_pool2d`` over that batch
(``square``, before 2026-12-06). Forward and backward in one compiled graph on the main job's batch (16 videos of 10
predicted 64x64 frames). Blocks of ``--steps`` calls alternate between the versions for ``--rounds`` rounds; medians;
also the largest difference of the values and gradients from today's, to show they compute the same thing.

    python bench/ssim_loss.py [--rounds 5] [--steps 10] [--json]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, emit, loadavg, median  # noqa: E402

sys.path.insert(0, ROOT)
import msforge  # noqa: E402,F401  (caps oneDNN's ISA before mindspore loads)
import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import Tensor, ops  # noqa: E402

from models import base  # noqa: E402


def batch_window_mean(a, win):
    """The windows' means over a batch of (B*C) one-channel images: two separable pools."""
    return ops.avg_pool2d(ops.avg_pool2d(a, kernel_size=(1, win), stride=1), kernel_size=(win, 1), stride=1)


def square_window_mean(a, win):
    """The windows' means as one square average pool over a batch of one-channel images."""
    return ops.avg_pool2d(a, kernel_size=win, stride=1)


def ssim_with(window_mean):
    return lambda predictions, targets: base.ssim_of_frames(predictions, targets, window_mean=window_mean)


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="calls per block")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(0)
    shape = (16, 10, 1, 64, 64)
    predictions = Tensor(rng.random(shape, dtype=np.float32))
    targets = Tensor((rng.random(shape) < 0.2).astype(np.float32))  # sparse bright strokes, like Moving MNIST
    versions = {"channels": ms.jit(ms.value_and_grad(base.ssim_of_frames)),
                "batch": ms.jit(ms.value_and_grad(ssim_with(batch_window_mean))),
                "square": ms.jit(ms.value_and_grad(ssim_with(square_window_mean)))}
    results = {}
    for key, fn in versions.items():  # compile, and the values to compare
        value, grad = fn(predictions, targets)
        results[key] = (float(value.asnumpy()), grad.asnumpy())
    timings = {key: [] for key in versions}
    for r in range(args.rounds):
        for key in (list(versions) if r % 2 == 0 else list(versions)[::-1]):
            fn = versions[key]
            t0 = time.perf_counter()
            for _ in range(args.steps):
                value, grad = fn(predictions, targets)
            grad.asnumpy()
            timings[key].append((time.perf_counter() - t0) / args.steps)
    ms_ = {key: median(t) * 1e3 for key, t in timings.items()}
    result = {f"ssim_loss_{key}_ms": v for key, v in ms_.items()}
    line = [f"SSIM loss forward + backward, {shape[0]}x{shape[1]} frames of 64x64: channels layout "
            f"{ms_['channels']:.1f} ms"]
    for key in ("batch", "square"):
        value_diff = abs(results[key][0] - results["channels"][0])
        grad_diff = float(np.abs(results[key][1] - results["channels"][1]).max())
        result.update({f"ssim_loss_ratio_{key}_over_channels": ms_[key] / ms_["channels"],
                       f"ssim_loss_{key}_value_maxdiff": value_diff, f"ssim_loss_{key}_grad_maxdiff": grad_diff})
        line.append(f"{key} {ms_[key]:.1f} ms ({ms_[key] / ms_['channels']:.2f}x; value differs by {value_diff:.1e}, "
                    f"gradient by {grad_diff:.1e})")
    result["ssim_loss_loadavg"] = loadavg()
    emit(result, args.json, [", ".join(line) + f" (load average {result['ssim_loss_loadavg']})"])

if __name__ == "__main__":
    main()
