"""Which of MindSpore's compute kernels run in bfloat16 on this device, and how fast against float32.

``Trainer(precision="bf16-mixed")`` pays only where the heavy kernels (MatMul, Conv2D) have bfloat16 versions. This
tries each in both dtypes on the main job's sizes (a 3x3 convolution of 16 frames of 64 channels at 32x32, and the
matching im2col MatMul), once compiled, and prints the float32/bfloat16 time ratio, or the error when bfloat16 is
refused. Also prints whether this CPU has AVX512_BF16 (oneDNN's bfloat16 instructions).

    python bench/bf16_kernels.py [--repeats 20] [--json]
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import msforge  # noqa: E402,F401  (caps oneDNN's ISA before mindspore loads)

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
from mindspore import Tensor, ops  # noqa: E402

from msforge.layers import _cpu_flags as cpu_flags  # noqa: E402


def timed(fn, args, repeats):
    fn(*args).astype(ms.float32).asnumpy()  # first call: kernel selection (and the error, if refused)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    out.astype(ms.float32).asnumpy()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((16, 64, 32, 32), np.float32)
    w = rng.random((64, 64, 3, 3), np.float32)
    a = rng.random((16 * 32 * 32, 64 * 9), np.float32)
    b = rng.random((64 * 9, 64), np.float32)
    cases = {
        "Conv2D": (lambda x, w: ops.conv2d(x, w, pad_mode="same"), (x, w)),
        "MatMul": (ops.matmul, (a, b)),
        "BatchMatMul": (ops.bmm, (a.reshape(16, 1024, 576), np.broadcast_to(b, (16, 576, 64)).copy())),
    }
    flags = cpu_flags()  # msforge.layers reads them the same way to decide bf16-mixed
    result = {"device_target": ms.get_context("device_target"), "mindspore": ms.__version__,
              "cpu_avx512_bf16": "avx512_bf16" in flags, "oneDNN_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}
    for name, (fn, arrays) in cases.items():
        fp32 = timed(fn, [Tensor(v) for v in arrays], args.repeats)
        try:
            bf16 = timed(fn, [Tensor(v).astype(ms.bfloat16) for v in arrays], args.repeats)
        except (TypeError, RuntimeError, ValueError) as err:
            lines = [ln.strip() for ln in str(err).splitlines()]
            reason = next((ln for ln in lines if "fail" in ln.lower() or "support" in ln.lower()), type(err).__name__)
            print(f"{name:12s} float32 {fp32 * 1e3:8.2f} ms   bfloat16 refused: {reason[:120]}")
            result[name] = {"fp32_ms": round(fp32 * 1e3, 3), "bf16": "refused"}
            continue
        print(f"{name:12s} float32 {fp32 * 1e3:8.2f} ms   bfloat16 {bf16 * 1e3:8.2f} ms   fp32/bf16 {fp32 / bf16:.2f}")
        result[name] = {"fp32_ms": round(fp32 * 1e3, 3), "bf16_ms": round(bf16 * 1e3, 3),
                        "ratio_fp32_over_bf16": round(fp32 / bf16, 3)}
    print(f"CPU AVX512_BF16: {result['cpu_avx512_bf16']}; MindSpore {ms.__version__} on {result['device_target']}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
