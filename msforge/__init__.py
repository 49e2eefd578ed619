"""msforge: a Lightning-style training framework for MindSpore.

Importing msforge caps oneDNN at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``) unless the variable is already set: on AVX-512
machines MindSpore's bundled oneDNN otherwise picks a convolution kernel about 70x slower. Opt out by setting the
variable yourself before importing msforge, e.g. ``ONEDNN_MAX_CPU_ISA=ALL``.
"""
import os
import sys
import warnings

__version__ = "0.1.0"

if "ONEDNN_MAX_CPU_ISA" not in os.environ:
    if "mindspore" in sys.modules:
        warnings.warn(
            "mindspore was imported before msforge, so oneDNN's ISA could not be capped; CPU convolutions may run "
            "~70x slower on AVX-512 machines. Import msforge first or set ONEDNN_MAX_CPU_ISA=AVX2 in the environment.",
            stacklevel=2,
        )
    else:
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"

from msforge.arguments import MisconfigurationError  # noqa: E402
from msforge.callback import Callback  # noqa: E402
from msforge.data import DataLoader, DataModule  # noqa: E402
from msforge.module import Module  # noqa: E402
from msforge.seed import seed_everything  # noqa: E402
from msforge.trainer import Trainer  # noqa: E402

__all__ = ["Trainer", "Module", "DataModule", "Callback", "DataLoader", "MisconfigurationError", "seed_everything",
           "__version__"]
