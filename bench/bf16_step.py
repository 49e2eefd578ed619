"""What bf16-mixed buys on this CPU (issue 15, item 1): a whole training step (forward, backward, Adam) with
msforge.layers.Conv2d multiplying in bfloat16 (``Trainer(precision="bf16-mixed")`` on a CPU with AVX512_BF16; the 3x3
shapes Winograd's algorithm computes stay on it, in float32) against the same step in float32, steps/s and the ratio
bf16/fp32.

Models, as their experiment configs build them: ``convlstm`` is the main job's (experiments/convlstm_mnist.yaml,
batch 16), ``simvp`` the 2-hour run's SimVP-gSTA (experiments/mmnist_2h_lr3e-3.yaml, batch 16). One process per
model holds both versions (same initial weights, each its own compiled step); blocks of ``--steps`` steps alternate
between them for ``--rounds`` rounds after a warm-up that compiles; each figure is the median over rounds. Also
prints each version's loss after the same steps on the same batches, to show the two train alike (bench/_step_ab.py).

    python bench/bf16_step.py [--rounds 5] [--steps 20] [--models convlstm,simvp] [--json]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _step_ab  # noqa: E402

CONFIGS = {"convlstm": "convlstm_mnist.yaml", "simvp": "mmnist_2h_lr3e-3.yaml"}


def bfloat16(module):
    from msforge import layers

    if not layers.use_bfloat16_convolutions(module):
        raise SystemExit("bf16_step: no bfloat16 convolutions here (the CPU needs AVX512_BF16, and the kernels a "
                         "C++ compiler)")


if __name__ == "__main__":
    _step_ab.main(__file__, __doc__, CONFIGS, lambda name: {"fp32": None, "bf16": bfloat16})
