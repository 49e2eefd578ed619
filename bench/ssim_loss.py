"""The SSIM loss term's cost (issue 16, goal 1): models.base.ssim_of_frames, whose 7x7 window means are a 1x7 average
pool followed by a 7x1 one (``models.base.valid_window_mean``), against the same function given one 7x7
``ops.avg_pool2d`` for them (what it used before), forward and backward in one compiled graph on the main job's batch (16 videos of 10 predicted
64x64 frames). Blocks of ``--steps`` calls alternate between the two for ``--rounds`` rounds; medians; also the largest difference of the
values and gradients, to show the two compute the same thing.

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


def avg_pool_window_mean(a, win):
    """The windows' means as ssim_of_frames computed them before: one square average pool."""
    return ops.avg_pool2d(a, kernel_size=win, stride=1)


def ssim_with_avg_pool(predictions, targets):
    return base.ssim_of_frames(predictions, targets, window_mean=avg_pool_window_mean)


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
    versions = {"separable": ms.jit(ms.value_and_grad(base.ssim_of_frames)),
                "square": ms.jit(ms.value_and_grad(ssim_with_avg_pool))}
    results = {}
    for key, fn in versions.items():  # compile, and the values to compare
        value, grad = fn(predictions, targets)
        results[key] = (float(value.asnumpy()), grad.asnumpy())
    timings = {key: [] for key in versions}
    for _ in range(args.rounds):
        for key, fn in versions.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                value, grad = fn(predictions, targets)
            grad.asnumpy()
            timings[key].append((time.perf_counter() - t0) / args.steps)
    new, old = median(timings["separable"]), median(timings["square"])
    value_diff = abs(results["separable"][0] - results["square"][0])
    grad_diff = float(np.abs(results["separable"][1] - results["square"][1]).max())
    result = {"ssim_loss_separable_ms": new * 1e3, "ssim_loss_square_ms": old * 1e3,
              "ssim_loss_ratio_square_over_separable": old / new, "ssim_loss_value_maxdiff": value_diff,
              "ssim_loss_grad_maxdiff": grad_diff}
    lines = [f"SSIM loss forward + backward, {shape[0]}x{shape[1]} frames of 64x64: separable pools {new * 1e3:.1f} ms, "
             f"one 7x7 pool {old * 1e3:.1f} ms: {old / new:.2f}x; value differs by {value_diff:.1e}, gradient by "
             f"{grad_diff:.1e} (load average {loadavg()})"]
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
