"""Which train-step outputs MindSpore's compile cache can store and load again (issue 15, item 4).

A tiny train step (Dense(4, 3), Adam, value_and_grad with an aux output) whose forward returns a dict
``{"loss", "aux"}`` is compiled in two fresh processes sharing one ``MS_COMPILER_CACHE_PATH``: the first fills the
cache (cold), the second should load it (warm). Four ways of returning the outputs from the top graph:

* ``dict``: the dict itself (what msforge's TrainStep returns for a dict ``training_step``), LAX syntax (default);
* ``values``: ``tuple(out.values())``, LAX;
* ``keys+values``: ``(tuple(out.keys()), tuple(out.values()))``, LAX: the key names as constant outputs;
* ``dict-strict``: the dict, with ``jit_syntax_level=STRICT``.

For each it prints whether the cold and the warm run worked (or the first line of the error), whether the warm run
said it used the cache, and the Python type of the output.

    python bench/cache_outputs.py [--json]
"""
import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import emit  # noqa: E402

VARIANTS = ("dict", "values", "keys+values", "dict-strict")
CACHE_USED = "Use the compilation cache"

CHILD = r'''
import os, sys
os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

variant = sys.argv[1]
ms.set_context(mode=ms.GRAPH_MODE, jit_syntax_level=ms.STRICT if variant == "dict-strict" else ms.LAX)


class Net(nn.Cell):
    def __init__(self):
        super().__init__()
        self.dense = nn.Dense(4, 3)

    def construct(self, x):
        y = self.dense(x)
        return {"loss": y.sum(), "aux": y.mean()}


class Step(nn.Cell):
    def __init__(self, net):
        super().__init__(auto_prefix=False)
        self.net, self.opt = net, nn.Adam(net.trainable_params())
        self.grad_fn = ms.value_and_grad(self.forward, None, self.opt.parameters, has_aux=True)

    def forward(self, x):
        out = self.net(x)
        if variant == "values":
            return out["loss"], tuple(out.values())
        if variant == "keys+values":
            return out["loss"], (tuple(out.keys()), tuple(out.values()))
        return out["loss"], out

    def construct(self, x):
        (_, out), grads = self.grad_fn(x)
        self.opt(grads)
        return out


out = Step(Net())(Tensor(np.ones((2, 4), np.float32)))
print("OUTPUT_TYPE", type(out).__name__, flush=True)
'''


def run(variant, cache_dir):
    env = dict(os.environ, MS_COMPILER_CACHE_ENABLE="1", MS_COMPILER_CACHE_PATH=cache_dir)
    script = os.path.join(cache_dir, "child.py")  # a file: MindSpore's parser reads the source of construct
    with open(script, "w") as f:
        f.write(CHILD)
    proc = subprocess.run([sys.executable, script, variant], env=env, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    kind = next((line.split()[1] for line in text.splitlines() if line.startswith("OUTPUT_TYPE")), None)
    errors = [line.strip() for line in text.splitlines() if "Error:" in line and not line.startswith("[")]
    return {"ok": proc.returncode == 0 and kind is not None, "output_type": kind,
            "error": None if proc.returncode == 0 else (errors[-1] if errors else f"exit {proc.returncode}"),
            "used_cache": CACHE_USED in text}


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result, lines = {}, []
    for variant in VARIANTS:
        with tempfile.TemporaryDirectory() as cache_dir:
            cold, warm = run(variant, cache_dir), run(variant, cache_dir)
        result[variant] = {"cold": cold, "warm": warm}
        for label, r in (("cold", cold), ("warm", warm)):
            state = f"ok, output {r['output_type']}" if r["ok"] else f"FAILED: {r['error']}"
            cache = ", loaded from the cache" if r["used_cache"] else ""
            lines.append(f"{variant:12s} {label}: {state}{cache}")
    emit(result, args.json, lines)


if __name__ == "__main__":
    main()
