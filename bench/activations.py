"""What msforge's activation kernels buy: a whole training step (forward, backward, Adam) with the model's GELU, SiLU
and GLU on ``msforge.layers``' compiled kernels (the default) against the same step with them on MindSpore's
elementwise ops (each layer's ``use_kernel`` set to False), steps/s and the ratio kernel/mindspore.

Models, as their experiment configs build them: ``simvp`` the 2-hour run's SimVP-gSTA
(experiments/mmnist_2h_anneal.yaml, batch 16), ``tau`` experiments/tau_mnist.yaml's TAU. One process per model holds
both versions (same initial weights, each its own compiled step), timed in alternating blocks; also each version's
loss after the same 8 steps: the two compute the same function (bench/_step_ab.py).

    python bench/activations.py [--rounds 5] [--steps 20] [--models simvp,tau] [--json]
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _step_ab  # noqa: E402

CONFIGS = {"simvp": "mmnist_2h_anneal.yaml", "tau": "tau_mnist.yaml"}


def on_mindspore(module):
    from msforge import layers

    cells = [c for _, c in module.cells_and_names()
             if isinstance(c, (layers.GELU, layers.SiLU, layers.GLU)) and c.use_kernel]
    if not cells:
        raise SystemExit("activations: the model has no activation on msforge's kernels (they need a C++ compiler)")
    for cell in cells:
        cell.use_kernel = False


if __name__ == "__main__":
    _step_ab.main(__file__, __doc__, CONFIGS, lambda name: {"mindspore": on_mindspore, "kernel": None})
