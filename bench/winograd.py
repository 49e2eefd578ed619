"""What Winograd's algorithm buys the ConvLSTM: a whole training step (forward, backward, Adam) with the 3x3 gate
convolutions' output, input gradient and weight gradient by Winograd's F(4x4, 3x3) and F(3x3, 4x4)
(msforge/kernels/winograd.h, the default) against the same step on oneDNN's direct kernels
(``Conv2d.set_winograd(False)``, what msforge ran before 2026-12-08), steps/s and the ratio winograd/direct. Winograd
runs in float32 only: the main job's model (experiments/convlstm_mnist.yaml, batch 16) with its loss, in float32.

One process holds both versions (same initial weights, each its own compiled step), timed in alternating blocks; also
each version's loss after the same 8 steps: the two compute the same function to float32 rounding
(bench/_step_ab.py).

    python bench/winograd.py [--rounds 5] [--steps 20] [--json]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _step_ab  # noqa: E402

CONFIGS = {"convlstm": "convlstm_mnist.yaml"}


def direct(module):
    """Every Winograd-shaped convolution of the model on oneDNN's direct kernels."""
    from msforge.layers import kernel_convolutions

    convolutions = [conv for conv in kernel_convolutions(module) if conv.winograd_shape]
    if not convolutions:
        raise SystemExit("winograd: the model has no 3x3 convolution that Winograd's algorithm computes here")
    for conv in convolutions:
        conv.set_winograd(False)


def versions(name):
    return {"direct": direct, "winograd": None}


if __name__ == "__main__":
    _step_ab.main(__file__, __doc__, CONFIGS, versions)
