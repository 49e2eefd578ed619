#!/usr/bin/env python
"""The new models against independent PyTorch twins: same weights, same input, largest output difference.

    python bench/twins.py [--json]

Each twin is written here from the papers' equations, separately from models/ (bench/twins_predrnn.py for PredRNN
and PredRNN-v2, bench/twins_simvp.py for SimVP and TAU): the MindSpore model's weights are copied into it and both
run the same random input. Prints one line per model, then (always last) the JSON object
``{"predrnn": maxdiff, "predrnn_v2": ..., "simvp": ..., "tau": ...}``; exits 1 if any difference is 1e-4 or more.
Needs torch (``pip install -r bench/requirements.txt``); exits 3 with a message without it.
"""
import argparse
import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import ROOT, emit  # noqa: E402

TOLERANCE = 1e-4
FAMILIES = ("twins_predrnn", "twins_simvp")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("bench/twins.py needs torch: pip install -r bench/requirements.txt", file=sys.stderr)
        return 3
    sys.path.insert(0, ROOT)
    import msforge  # noqa: F401  (first: caps oneDNN's ISA before mindspore loads)

    result = {}
    for family in FAMILIES:
        result.update(importlib.import_module(family).maxdiffs())
    lines = [f"{name:12s} max |msforge - torch| = {diff:.3g}" + ("" if diff < TOLERANCE else "  FAIL")
             for name, diff in result.items()]
    emit(result, args.json, lines)
    return 0 if all(diff < TOLERANCE for diff in result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
