#!/usr/bin/env python
"""SimVP (gSTA) and TAU against PyTorch twins written here from the papers' equations (nothing imported from models/).

    python bench/twins_simvp.py        # prints {"simvp": maxdiff, "tau": maxdiff} as JSON

For each model and a few configurations (the paper's layout at full resolution, patches, more output frames than
input frames so the network is rolled forward, another frame size), builds the MindSpore model and the twin, copies
every MindSpore parameter into the twin by name (GroupNorm/BatchNorm ``gamma``/``beta``/``moving_*`` are PyTorch's
``weight``/``bias``/``running_*``), randomises the BatchNorm statistics and layer scales so the translator's branches
weigh in, runs the same random input in training mode (batch statistics) and in eval mode (running statistics), and
reports the largest absolute output difference. TAU's value also covers its differential divergence term on the
predictions against random targets. ``bench/twins.py`` merges :func:`maxdiffs` with the PredRNN twins'.

Papers: Gao et al., "SimVP: Simpler yet Better Video Prediction", CVPR 2022; Tan et al., "SimVP: Towards Simple yet
Powerful Spatiotemporal Predictive Learning", arXiv:2211.12509 (gSTA); Tan et al., "Temporal Attention Unit: Towards
Efficient Spatiotemporal Predictive Learning", CVPR 2023 (TAU, differential divergence regularisation).
"""
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import msforge  # noqa: E402,F401  (first: caps oneDNN's ISA before mindspore loads)

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mindspore import Tensor  # noqa: E402
from torch import nn  # noqa: E402

CONFIGS = {  # a few shapes per model; each is small enough to run in seconds on 2 cores
    "simvp": [dict(hid_S=16, hid_T=32, N_S=4, N_T=3, patch=1),
              dict(hid_S=8, hid_T=24, N_S=2, N_T=2, patch=2, mlp_ratio=2.0, spatio_kernel_enc=5,
                   in_frames=4, out_frames=9, frame_shape=(2, 32, 48))],
    "tau": [dict(hid_S=16, hid_T=32, N_S=4, N_T=3, patch=1),
            dict(hid_S=8, hid_T=24, N_S=2, N_T=2, patch=2, mlp_ratio=2.0, spatio_kernel_dec=5, attention_kernel=15,
                 in_frames=4, out_frames=9, frame_shape=(2, 32, 48))],
}


# -- the twins -------------------------------------------------------------------------------------------------------
def same_conv(cin, cout, k, stride=1, dilation=1, groups=1, bias=True):
    return nn.Conv2d(cin, cout, k, stride=stride, padding=dilation * (k - 1) // 2, dilation=dilation, groups=groups,
                     bias=bias)


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, k, resample):
        super().__init__()
        self.up = resample == "up"
        self.conv = same_conv(cin, cout * 4 if self.up else cout, k, stride=2 if resample == "down" else 1)
        self.norm = nn.GroupNorm(2, cout)

    def forward(self, x):
        x = self.conv(x)
        if self.up:
            x = F.pixel_shuffle(x, 2)
        return F.silu(self.norm(x))


class Encoder(nn.Module):
    def __init__(self, cin, hid, n, k):
        super().__init__()
        self.blocks = nn.ModuleList(ConvBlock(cin if i == 0 else hid, hid, k, "down" if i % 2 else None)
                                    for i in range(n))

    def forward(self, x):
        skip = x = self.blocks[0](x)
        for block in self.blocks[1:]:
            x = block(x)
        return x, skip


class Decoder(nn.Module):
    def __init__(self, hid, cout, n, k):
        super().__init__()
        # the encoder strides at blocks 1, 3, ...; the decoder upsamples at the mirrored positions
        self.blocks = nn.ModuleList(ConvBlock(hid, hid, k, "up" if (n - 1 - i) % 2 else None) for i in range(n))
        self.readout = nn.Conv2d(hid, cout, 1)

    def forward(self, x, skip):
        for block in self.blocks[:-1]:
            x = block(x)
        return self.readout(self.blocks[-1](x + skip))


class LargeKernel(nn.Module):
    """k x k depthwise receptive field: depthwise (2d-1)^2, then depthwise dilated by d with the odd kernel <= k/d."""

    def __init__(self, dim, k, d=3):
        super().__init__()
        wide = k // d - (1 - (k // d) % 2)
        self.local = same_conv(dim, dim, 2 * d - 1, groups=dim)
        self.wide = same_conv(dim, dim, wide, dilation=d, groups=dim)

    def forward(self, x):
        return self.wide(self.local(x))


class Gated(nn.Module):
    """gSTA: sigmoid(g) * f with [f, g] = Conv1x1(LargeKernel(x))."""

    def __init__(self, dim, k):
        super().__init__()
        self.large_kernel = LargeKernel(dim, k)
        self.gate_conv = nn.Conv2d(dim, 2 * dim, 1)

    def forward(self, x):
        f, g = self.gate_conv(self.large_kernel(x)).chunk(2, dim=1)
        return torch.sigmoid(g) * f


class Temporal(nn.Module):
    """TAU: Conv1x1(LargeKernel(x)) * SE(x) * x."""

    def __init__(self, dim, k, reduction=16):
        super().__init__()
        self.large_kernel = LargeKernel(dim, k)
        self.static_conv = nn.Conv2d(dim, dim, 1)
        self.squeeze = nn.Linear(dim, max(dim // reduction, 4), bias=False)
        self.excite = nn.Linear(max(dim // reduction, 4), dim, bias=False)

    def forward(self, x):
        dynamic = torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean(dim=(2, 3))))))
        return self.static_conv(self.large_kernel(x)) * dynamic[:, :, None, None] * x


class Branch(nn.Module):
    def __init__(self, dim, unit):
        super().__init__()
        self.proj_in, self.unit, self.proj_out = nn.Conv2d(dim, dim, 1), unit, nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        return self.proj_out(self.unit(F.gelu(self.proj_in(x)))) + x


class MLP(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc_in = nn.Conv2d(dim, hidden, 1)
        self.depthwise = same_conv(hidden, hidden, 3, groups=hidden)
        self.fc_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc_out(F.gelu(self.depthwise(self.fc_in(x))))


class Block(nn.Module):
    def __init__(self, dim, out_dim, unit, k, mlp_ratio):
        super().__init__()
        self.norm_attn, self.norm_mlp = nn.BatchNorm2d(dim), nn.BatchNorm2d(dim)
        self.attn = Branch(dim, unit(dim, k))
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.scale_attn = nn.Parameter(torch.full((dim, 1, 1), 1e-2))
        self.scale_mlp = nn.Parameter(torch.full((dim, 1, 1), 1e-2))
        self.reduction = nn.Conv2d(dim, out_dim, 1) if out_dim != dim else None

    def forward(self, z):
        z = z + self.scale_attn * self.attn(self.norm_attn(z))
        z = z + self.scale_mlp * self.mlp(self.norm_mlp(z))
        return z if self.reduction is None else self.reduction(z)


class Translator(nn.Module):
    def __init__(self, channels, hid_T, n, unit, k, mlp_ratio):
        super().__init__()
        dims = [channels] + [hid_T] * (n - 1) + [channels]
        self.blocks = nn.ModuleList(Block(dims[i], dims[i + 1], unit, k, mlp_ratio) for i in range(n))

    def forward(self, z):
        for block in self.blocks:
            z = block(z)
        return z


class Net(nn.Module):
    def __init__(self, unit, hid_S, hid_T, N_S, N_T, patch, in_frames=10, frame_shape=(1, 64, 64), spatio_kernel_enc=3,
                 spatio_kernel_dec=3, mlp_ratio=4.0, attention_kernel=21, **_):
        super().__init__()
        c = frame_shape[0] * patch * patch
        self.frames, self.patch = in_frames, patch
        self.encoder = Encoder(c, hid_S, N_S, spatio_kernel_enc)
        self.translator = Translator(in_frames * hid_S, hid_T, N_T, unit, attention_kernel, mlp_ratio)
        self.decoder = Decoder(hid_S, c, N_S, spatio_kernel_dec)

    def once(self, x):
        b, t, c, h, w = x.shape
        frames = F.pixel_unshuffle(x.reshape(b * t, c, h, w), self.patch)
        latent, skip = self.encoder(frames)
        _, hid, hl, wl = latent.shape
        z = self.translator(latent.reshape(b, t * hid, hl, wl)).reshape(b * t, hid, hl, wl)
        return F.pixel_shuffle(self.decoder(z, skip), self.patch).reshape(b, t, c, h, w)

    def forward(self, x, out_frames):
        outputs = []
        for _ in range(math.ceil(out_frames / self.frames)):
            x = self.once(x)
            outputs.append(x)
        return torch.cat(outputs, 1)[:, :out_frames]


class Twin(nn.Module):
    """Holds the network under ``net`` as the msforge models do, so parameter names line up."""

    def __init__(self, unit, **config):
        super().__init__()
        self.net = Net(unit, **config)


def ddr(pred, target, tau=0.1):
    """KL(softmax over time of pred's frame differences / tau || the same of target's), summed over time, averaged."""
    log_p = F.log_softmax((pred[:, 1:] - pred[:, :-1]) / tau, dim=1)
    log_q = F.log_softmax((target[:, 1:] - target[:, :-1]) / tau, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()


# -- comparison ------------------------------------------------------------------------------------------------------
TORCH_NAMES = ((".gamma", ".weight"), (".beta", ".bias"), (".moving_mean", ".running_mean"),
               (".moving_variance", ".running_var"))


def torch_name(name):
    for ms_suffix, torch_suffix in TORCH_NAMES:
        if name.endswith(ms_suffix):
            return name[: -len(ms_suffix)] + torch_suffix
    return name


def copy_weights(model, twin, rng):
    """Randomise the BatchNorm statistics and layer scales of ``model`` (its other weights keep their initialisation),
    then copy every parameter into ``twin``; every twin tensor but BatchNorm's step counters must be covered."""
    state = twin.state_dict()
    copied = set()
    for p in model.get_parameters():
        value = p.asnumpy()
        if p.name.endswith(("moving_mean", "beta")):
            value = rng.normal(0, 0.2, value.shape).astype(np.float32)
        elif p.name.endswith(("moving_variance", "gamma")):
            value = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        elif p.name.endswith(("scale_attn", "scale_mlp")):
            value = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        p.set_data(Tensor(value))
        name = torch_name(p.name)
        if name not in state or tuple(state[name].shape) != value.shape:
            raise KeyError(f"{p.name} ({value.shape}) has no twin tensor {name}")
        state[name] = torch.from_numpy(value.copy())
        copied.add(name)
    missing = sorted(k for k in state if k not in copied and not k.endswith("num_batches_tracked"))
    if missing:
        raise KeyError(f"twin tensors without a MindSpore parameter: {missing}")
    twin.load_state_dict(state)


def compare(name, config, seed=0):
    """Largest |MindSpore - torch| over the outputs in training and eval mode (and TAU's DDR term)."""
    from models.simvp import SimVP
    from models.tau import TAU, differential_divergence

    rng = np.random.default_rng(seed)
    ms.set_seed(seed)  # the model's initial weights, so every run compares the same numbers
    model_class, unit = (SimVP, Gated) if name == "simvp" else (TAU, Temporal)
    model = model_class(**config)
    twin = Twin(unit, **config)
    copy_weights(model, twin, rng)
    in_frames, out_frames = config.get("in_frames", 10), config.get("out_frames", 10)
    shape = config.get("frame_shape", (1, 64, 64))
    x = rng.random((2, in_frames, *shape), dtype=np.float32)
    target = rng.random((2, out_frames, *shape), dtype=np.float32)
    worst = 0.0
    for training in (True, False):
        model.set_train(training)
        twin.train(training)
        ours = model(Tensor(x))
        with torch.no_grad():
            theirs = twin.net(torch.from_numpy(x), out_frames)
        worst = max(worst, float(np.abs(ours.asnumpy() - theirs.numpy()).max()))
        if name == "tau":
            term = differential_divergence(ours, Tensor(target)).asnumpy()
            worst = max(worst, float(abs(term - ddr(theirs, torch.from_numpy(target)).item())))
    return worst


def maxdiffs():
    """``{"simvp": float, "tau": float}``: each model's largest output difference over :data:`CONFIGS`."""
    ms.set_context(mode=ms.GRAPH_MODE)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return {name: max(compare(name, config) for config in configs) for name, configs in CONFIGS.items()}


if __name__ == "__main__":
    print(json.dumps(maxdiffs()))
