"""Does a SimVP training step cost the same from its initial weights as from trained ones? The eighth 2-hour run
(experiments/mmnist_2h_bf16.yaml) made 4.6-5.5 steps a second over its first 15,000 steps and 5.8-6.3 later; this
times the same step (the config's precision) from the initial weights (seed 0) against the weights of
docs/mmnist_2h_bf16.ckpt (that run's, step 39,000), both on the same Moving MNIST batches (``--data videos``, the
default here) or noise, and prints steps/s and the ratio trained/init.

    python bench/trained_step.py [--rounds 5] [--steps 20] [--data videos|noise] [--json]

Both versions train during the timing (Adam from zero moments in both), so the trained one stays near its weights.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _step_ab  # noqa: E402
from _common import ROOT  # noqa: E402

CONFIGS = {"simvp": "mmnist_2h_bf16.yaml"}
TRAINED = os.path.join(ROOT, "docs", "mmnist_2h_bf16.ckpt")


def bfloat16_where_available(module):
    """The config's bf16-mixed: msforge's convolutions in bfloat16 where this CPU has them (float32 otherwise, as the
    Trainer does)."""
    from msforge import layers

    layers.use_bfloat16_convolutions(module)


def trained(module):
    from experiments.run import load_weights  # _step_ab.build put the repository on sys.path

    load_weights(module, TRAINED)
    bfloat16_where_available(module)


if __name__ == "__main__":
    _step_ab.main(__file__, __doc__, CONFIGS, lambda name: {"init": bfloat16_where_available, "trained": trained},
                  default_data="videos")
