"""What fusing the ConvLSTM's GroupNorm into its gate update buys: a whole training step (forward, backward, Adam) with
``msforge.layers.GroupNormLSTMGates`` (the default: one kernel each way) against the same step with the GroupNorm
kernel, then the LSTMGates kernel (``separate``: what ConvLSTMCell ran before 2026-12-08), steps/s and the ratio
fused/separate.

Models: ``convlstm`` the main job's (experiments/convlstm_mnist.yaml, batch 16) in float32, ``convlstm_bf16`` the same
with its convolutions in bfloat16 as ``precision: bf16-mixed`` runs them (needs AVX512_BF16). One
process per model holds both versions (same initial weights, each its own compiled step), timed in alternating
blocks; also each version's loss after the same 8 steps: the two compute the same function (bench/_step_ab.py).

    python bench/norm_gates.py [--rounds 5] [--steps 20] [--models convlstm,convlstm_bf16] [--json]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _step_ab  # noqa: E402
from bf16_step import bfloat16  # noqa: E402  (bf16-mixed convolutions)

CONFIGS = {"convlstm": "convlstm_mnist.yaml", "convlstm_bf16": "convlstm_mnist.yaml"}


def separate(module):
    """Each normalised ConvLSTM cell's update as the GroupNorm kernel, then the LSTMGates kernel."""
    from mindspore import nn

    from models.convlstm import ConvLSTMCell
    from msforge.layers import LSTMGates

    class Separate(nn.Cell):
        def __init__(self, norm):
            super().__init__()
            self.forward_op, self.eps = norm.forward_op, norm.eps_tensor  # the GroupNorm's primitive, no Parameters
            self.gates = LSTMGates()

        def construct(self, gates, c, gamma, beta):
            return self.gates(self.forward_op(gates, gamma, beta, self.eps)[0], c)

    cells = [cell for _, cell in module.cells_and_names() if isinstance(cell, ConvLSTMCell) and cell.norm is not None]
    if not cells or not cells[0].update.use_kernel or not cells[0].norm.use_kernel:
        raise SystemExit("norm_gates: the model has no normalised ConvLSTM cell on msforge's kernels (they need a C++ "
                         "compiler)")
    for cell in cells:
        cell.update = Separate(cell.norm)


def versions(name):
    if name == "convlstm_bf16":
        return {"separate": lambda module: (bfloat16(module), separate(module)), "fused": bfloat16}
    return {"separate": separate, "fused": None}


if __name__ == "__main__":
    _step_ab.main(__file__, __doc__, CONFIGS, versions)
