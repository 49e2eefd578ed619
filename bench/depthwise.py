"""What msforge's own depthwise loops buy over oneDNN: a whole training step (forward, backward, Adam) with the
dilated stride-1 depthwise convolutions (SimVP's and TAU's translator: 7x7 dilated by 3) on
``msforge.layers.Conv2d``'s direct loops (the default) against the same step with them on oneDNN
(``Conv2d.set_direct_depthwise(False)``), steps/s and the ratio direct/oneDNN.

Models, as their experiment configs build them: ``simvp`` the 2-hour run's SimVP-gSTA
(experiments/mmnist_2h_l1_025.yaml, batch 16), ``tau`` experiments/tau_mnist.yaml's TAU. One process per model holds
both versions (same initial weights, each its own compiled step), timed in alternating blocks; also each version's
loss after the same 8 steps: the two compute the same function (bench/_step_ab.py).

    python bench/depthwise.py [--rounds 5] [--steps 20] [--models simvp,tau] [--json]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _step_ab  # noqa: E402

CONFIGS = {"simvp": "mmnist_2h_l1_025.yaml", "tau": "tau_mnist.yaml"}


def on_onednn(module):
    from msforge import layers

    convs = [conv for conv in layers.kernel_convolutions(module) if conv.dilated_depthwise]
    if not convs:
        raise SystemExit("depthwise: the model has no depthwise convolution on msforge's kernel (it needs a C++ "
                         "compiler)")
    for conv in convs:
        conv.set_direct_depthwise(False)


if __name__ == "__main__":
    _step_ab.main(__file__, __doc__, CONFIGS, lambda name: {"onednn": on_onednn, "direct": None})
