"""msforge.layers.GroupNorm: the compiled CPU kernel against MindSpore's nn.GroupNorm (forward and gradients, graph
mode), its checkpoint compatibility, and the fallbacks when the kernel cannot be built."""
import os
import shutil
import subprocess
import sys

import msforge  # noqa: F401  (before mindspore)
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

from msforge.layers import GroupNorm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_compiler = pytest.mark.skipif(not (os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")),
                                    reason="no C++ compiler: GroupNorm falls back to MindSpore's kernel")


class WeightedSum(nn.Cell):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def construct(self, x, w):
        return (self.norm(x) * w).sum()


def forward_and_grads(norm, x, w):
    net = WeightedSum(norm)
    grad_fn = ms.value_and_grad(net, grad_position=0, weights=net.trainable_params())
    _, (dx, (dgamma, dbeta)) = grad_fn(Tensor(x), Tensor(w))
    return norm(Tensor(x)).asnumpy(), dx.asnumpy(), dgamma.asnumpy(), dbeta.asnumpy()


@needs_compiler
@pytest.mark.parametrize("shape,groups", [((16, 128, 16, 16), 4), ((3, 6, 5, 7), 3), ((2, 8, 4, 4), 1),
                                          ((2, 8, 4, 4), 8), ((4, 12, 10), 2)])
def test_kernel_matches_mindspore_groupnorm_forward_and_gradients(shape, groups):
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(sum(shape) + groups)
    x = (rng.normal(size=shape) * 3 + 1.5).astype(np.float32)
    w = rng.normal(size=shape).astype(np.float32)
    gamma, beta = rng.normal(size=shape[1]).astype(np.float32), rng.normal(size=shape[1]).astype(np.float32)
    fast, reference = GroupNorm(groups, shape[1]), nn.GroupNorm(groups, shape[1])
    assert fast.use_kernel
    for norm in (fast, reference):
        norm.gamma.set_data(Tensor(gamma))
        norm.beta.set_data(Tensor(beta))
    if len(shape) == 3:  # nn.GroupNorm takes (N, C, H, W) only: compare on the same data with W = 1
        got = forward_and_grads(fast, x, w)
        want = forward_and_grads(reference, x[..., None], w[..., None])
        want = (want[0][..., 0], want[1][..., 0], want[2], want[3])
    else:
        got, want = forward_and_grads(fast, x, w), forward_and_grads(reference, x, w)
    for name, a, b in zip(("y", "dx", "dgamma", "dbeta"), got, want):
        scale = max(1.0, float(np.abs(b).max()))
        assert np.abs(a - b).max() <= 2e-6 * scale * max(1, np.sqrt(b.size / 1000)), name


def test_same_parameters_as_nn_groupnorm_so_checkpoints_move_between_them(tmp_path):
    fast, reference = GroupNorm(2, 8), nn.GroupNorm(2, 8)
    assert [(p.name, p.shape) for p in fast.get_parameters()] == [(p.name, p.shape) for p in reference.get_parameters()]
    fast.gamma.set_data(Tensor(np.arange(8, dtype=np.float32)))
    path = str(tmp_path / "gn.ckpt")
    ms.save_checkpoint(fast, path)
    ms.load_param_into_net(reference, ms.load_checkpoint(path))
    assert np.array_equal(reference.gamma.asnumpy(), np.arange(8, dtype=np.float32))


def run_python(code, **env):
    full = dict(os.environ, PYTHONPATH=ROOT, **env)
    return subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, env=full,
                          timeout=300)


CHECK = """
import msforge, numpy as np
from mindspore import Tensor, nn
from msforge.layers import GroupNorm
fast = GroupNorm(2, 4)
x = Tensor(np.random.default_rng(0).normal(size=(2, 4, 3, 3)).astype(np.float32))
diff = float(np.abs(fast(x).asnumpy() - nn.GroupNorm(2, 4)(x).asnumpy()).max())
print("use_kernel", fast.use_kernel, "diff", diff)
"""


@needs_compiler
def test_builds_into_the_cache_dir_once(tmp_path):
    first = run_python(CHECK, MSFORGE_CACHE_DIR=str(tmp_path))
    assert "use_kernel True diff" in first.stdout, first.stderr
    built = os.listdir(tmp_path / "kernels")
    assert len(built) == 1 and built[0].startswith("libgroup_norm-") and built[0].endswith(".so")
    stamp = os.stat(tmp_path / "kernels" / built[0]).st_mtime_ns
    second = run_python(CHECK, MSFORGE_CACHE_DIR=str(tmp_path))
    assert "use_kernel True" in second.stdout
    assert os.listdir(tmp_path / "kernels") == built and os.stat(tmp_path / "kernels" / built[0]).st_mtime_ns == stamp


@pytest.mark.parametrize("env,reason", [({"MSFORGE_KERNELS": "0"}, "MSFORGE_KERNELS=0"),
                                        ({"CXX": "/bin/false"}, "/bin/false failed (exit code 1)"),
                                        ({"CXX": sys.executable}, "failed (exit code 2)")])
def test_falls_back_to_mindspore_groupnorm_with_one_warning_naming_the_reason(tmp_path, env, reason):
    result = run_python(CHECK, MSFORGE_CACHE_DIR=str(tmp_path), **env)
    assert "use_kernel False diff 0.0" in result.stdout, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "uses MindSpore's GroupNorm kernel" in line]
    assert len(warnings) == 1 and reason in warnings[0], result.stderr
    left = os.listdir(tmp_path / "kernels") if (tmp_path / "kernels").exists() else []
    assert left == []  # no library, no temporary file
