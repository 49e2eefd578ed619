"""Seed every random number generator a training run touches."""
import os
import random

import numpy as np


def seed_everything(seed: int = 0) -> int:
    """Seed Python, NumPy and MindSpore, and export ``PL_GLOBAL_SEED``-style ``MSFORGE_SEED`` for subprocesses."""
    import mindspore

    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed_everything(seed={seed!r}): seed must be an int")
    os.environ["MSFORGE_SEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    mindspore.set_seed(seed)
    return seed
