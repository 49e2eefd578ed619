import os
import sys

import msforge  # noqa: F401  (caps oneDNN's ISA before mindspore loads)

sys.path.insert(0, os.path.dirname(__file__))
