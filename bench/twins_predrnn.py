#!/usr/bin/env python
"""PredRNN and PredRNN-v2 against PyTorch twins written here from the papers' equations (nothing imported from models/).

    python bench/twins_predrnn.py      # prints {"predrnn": maxdiff, "predrnn_v2": maxdiff} as JSON

For each model and a few configurations (patch sizes, kernel sizes, no norm / layer norm / group norm, frame shapes
with several channels), builds the MindSpore model and the twin, gives every MindSpore parameter a random value
(biases and norm shifts too, so every term weighs in), copies it into the twin by name, and compares on the same
random clip:

* the inference path (``model(inputs)``: predictions fed back);
* the training path (``training_forward`` compiled in graph mode, as the train step runs it) with a fixed random
  coin-flip mask written into the model's ``sampling_mask`` Parameter: PredRNN's scheduled sampling over the
  forecast steps, PredRNN-v2's reverse scheduled sampling over input and forecast steps; the forecast frames, the
  context loss (the predictions of input frames 2..T) and PredRNN-v2's decoupling loss.

Each model's value is the largest absolute difference over all of these. The twin follows the papers' wording where
the MindSpore model is organised for speed: separate sigmoid/tanh gates (the model runs its memory updates through
msforge's fused LSTM kernel), torch's pixel_unshuffle for the patches, and the decoupling loss as the paper's code
writes it (normalise over the pixels, then cosine similarity).

Papers: Wang et al., "PredRNN: Recurrent Neural Networks for Predictive Learning using Spatiotemporal LSTMs",
NeurIPS 2017; Wang et al., "PredRNN: A Recurrent Neural Network for Spatiotemporal Predictive Learning", TPAMI 2022.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import msforge  # noqa: E402,F401  (first: caps oneDNN's ISA before mindspore loads)

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from mindspore import Tensor, ops  # noqa: E402
from torch import nn  # noqa: E402

CONFIGS = {  # small enough to run in seconds on 2 cores; training=True also compares the training path
    "predrnn": [dict(patch=4, num_layers=3, hidden=16, kernel_size=3, in_frames=4, out_frames=5,
                     frame_shape=(1, 32, 32)),
                dict(patch=2, num_layers=2, hidden=8, kernel_size=5, norm="layer", in_frames=3, out_frames=4,
                     frame_shape=(2, 16, 24))],
    "predrnn_v2": [dict(patch=4, num_layers=2, hidden=32, kernel_size=3, norm="group", in_frames=4, out_frames=4,
                        frame_shape=(1, 32, 32)),
                   dict(patch=2, num_layers=3, hidden=8, kernel_size=3, in_frames=3, out_frames=3,
                        frame_shape=(3, 16, 16), reverse_scheduled_sampling=False, decouple_beta=0.5)],
}


# -- twin ------------------------------------------------------------------------------------------------------------
def group_count(channels, per_group=32):
    """GroupNorm groups as the model's "group" norm: channels // 32, lowered until it divides channels."""
    groups = max(1, channels // per_group)
    while channels % groups:
        groups -= 1
    return groups


class Cell(nn.Module):
    """ST-LSTM as the NeurIPS 2017 paper writes it.

    Gate blocks: conv_x -> i f g o i' f' g'; conv_h -> i f g o; conv_m -> i' f' g' (the model's order)."""

    def __init__(self, in_channels, hidden, k, norm, forget_bias=1.0):
        super().__init__()
        bias = norm is None
        self.hidden, self.forget_bias = hidden, forget_bias
        self.conv_x = nn.Conv2d(in_channels, 7 * hidden, k, padding=k // 2, bias=bias)
        self.conv_h = nn.Conv2d(hidden, 4 * hidden, k, padding=k // 2, bias=bias)
        self.conv_m = nn.Conv2d(hidden, 3 * hidden, k, padding=k // 2, bias=bias)
        self.conv_o = nn.Conv2d(2 * hidden, hidden, k, padding=k // 2, bias=bias)
        self.conv_fuse = nn.Conv2d(2 * hidden, hidden, 1, bias=False)
        for name, channels in (("norm_x", 7 * hidden), ("norm_h", 4 * hidden), ("norm_m", 3 * hidden),
                               ("norm_o", hidden)):
            groups = 1 if norm == "layer" else group_count(channels)
            setattr(self, name, nn.GroupNorm(groups, channels) if norm else nn.Identity())

    def forward(self, x, h, c, m):
        xi, xf, xg, xo, xi2, xf2, xg2 = torch.split(self.norm_x(self.conv_x(x)), self.hidden, 1)
        hi, hf, hg, ho = torch.split(self.norm_h(self.conv_h(h)), self.hidden, 1)
        mi, mf, mg = torch.split(self.norm_m(self.conv_m(m)), self.hidden, 1)
        i, f, g = torch.sigmoid(xi + hi), torch.sigmoid(xf + hf + self.forget_bias), torch.tanh(xg + hg)
        c = f * c + i * g
        i2, f2, g2 = torch.sigmoid(xi2 + mi), torch.sigmoid(xf2 + mf + self.forget_bias), torch.tanh(xg2 + mg)
        m = f2 * m + i2 * g2
        cm = torch.cat([c, m], 1)
        o = torch.sigmoid(xo + ho + self.norm_o(self.conv_o(cm)))
        return o * torch.tanh(self.conv_fuse(cm)), c, m, i * g, i2 * g2


class Net(nn.Module):
    def __init__(self, channels, patch, num_layers, hidden, k, norm):
        super().__init__()
        self.patch, self.hidden = patch, hidden
        frame = channels * patch * patch
        self.st_lstm = nn.ModuleList(Cell(frame if i == 0 else hidden, hidden, k, norm) for i in range(num_layers))
        self.readout = nn.Conv2d(hidden, frame, 1)

    def forward(self, inputs, out_frames, targets=None, forecast_mask=None, input_mask=None):
        """Every prediction (of frames 2 .. in+out), and the (delta_c, delta_m) pairs of every step and layer."""
        in_frames = inputs.shape[1]
        seq = [F.pixel_unshuffle(inputs[:, t], self.patch) for t in range(in_frames)]
        truth = None if targets is None else [F.pixel_unshuffle(targets[:, t], self.patch)
                                              for t in range(targets.shape[1])]
        n, _, height, width = seq[0].shape
        zeros = torch.zeros(n, self.hidden, height, width)
        hs, cs, m = [zeros] * len(self.st_lstm), [zeros] * len(self.st_lstm), zeros
        predictions, increments = [], []
        for t in range(in_frames + out_frames - 1):
            if t < in_frames:
                x = seq[t]
                if input_mask is not None and t > 0:
                    x = input_mask[:, t - 1] * x + (1 - input_mask[:, t - 1]) * predictions[-1]
            elif forecast_mask is not None:
                k = t - in_frames
                x = forecast_mask[:, k] * truth[k] + (1 - forecast_mask[:, k]) * predictions[-1]
            else:
                x = predictions[-1]
            for layer, cell in enumerate(self.st_lstm):  # m: from the layer below, or the top layer at t-1
                hs[layer], cs[layer], m, dc, dm = cell(x, hs[layer], cs[layer], m)
                x = hs[layer]
                increments.append((dc, dm))
            predictions.append(self.readout(x))
        frames = torch.stack([F.pixel_shuffle(p, self.patch) for p in predictions], 1)
        return frames, increments


class Twin(nn.Module):
    """Parameter names as the msforge models' (``net.``, ``adapter``)."""

    def __init__(self, v2, frame_shape=(1, 64, 64), patch=4, num_layers=3, hidden=64, kernel_size=3, norm=None,
                 decouple_beta=0.1, **unused):
        super().__init__()
        self.net = Net(frame_shape[0], patch, num_layers, hidden, kernel_size, norm)
        self.adapter = nn.Conv2d(hidden, hidden, 1, bias=False) if v2 else None

    def decoupling(self, increments):
        """TPAMI 2022: mean over steps, layers, videos, channels of |cos| between the adapted increments."""
        terms = []
        for dc, dm in increments:
            a = F.normalize(self.adapter(dc).flatten(2), dim=2)
            b = F.normalize(self.adapter(dm).flatten(2), dim=2)
            terms.append(torch.abs(F.cosine_similarity(a, b, dim=2)).mean())
        return torch.stack(terms).mean()


# -- comparison ------------------------------------------------------------------------------------------------------
def torch_name(name):
    for ms_suffix, torch_suffix in ((".gamma", ".weight"), (".beta", ".bias")):
        if name.endswith(ms_suffix):
            return name[: -len(ms_suffix)] + torch_suffix
    return name


def copy_weights(model, twin, rng):
    """A random value for every trainable MindSpore parameter, copied into the twin; all twin tensors covered."""
    state = twin.state_dict()
    copied = set()
    for p in model.trainable_params():
        value = rng.normal(0.0, 0.2, p.shape).astype(np.float32)
        if p.name.endswith("gamma"):
            value += 1.0
        p.set_data(Tensor(value))
        name = torch_name(p.name)
        if name not in state or tuple(state[name].shape) != value.shape:
            raise KeyError(f"{p.name} ({value.shape}) has no twin tensor {name}")
        state[name] = torch.from_numpy(value.copy())
        copied.add(name)
    missing = sorted(set(state) - copied)
    if missing:
        raise KeyError(f"twin tensors without a MindSpore parameter: {missing}")
    twin.load_state_dict(state)


class TrainingForward(ms.nn.Cell):
    """``training_forward`` compiled as in the train step; its loss dict returned as a tuple."""

    def __init__(self, model, names):
        super().__init__(auto_prefix=False)
        self.model, self.names = model, names

    def construct(self, inputs, targets):
        frames, extra = self.model.training_forward(inputs, targets)
        return (frames,) + tuple(extra[name] for name in self.names)


def compare(name, config, seed=0):
    """Largest |MindSpore - torch| over the inference output, the training output and the training losses."""
    from models.predrnn import PredRNN
    from models.predrnn_v2 import PredRNNv2

    rng = np.random.default_rng(seed)
    v2 = name == "predrnn_v2"
    model = (PredRNNv2 if v2 else PredRNN)(sampling_max_batch=4, **config)
    twin = Twin(v2, **config)
    copy_weights(model, twin, rng)
    in_frames, out_frames, shape = config["in_frames"], config["out_frames"], config["frame_shape"]
    batch = 2
    x = rng.random((batch, in_frames, *shape), dtype=np.float32)
    y = rng.random((batch, out_frames, *shape), dtype=np.float32)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    worst = 0.0
    with torch.no_grad():
        theirs, _ = twin.net(tx, out_frames)
    ours = model(Tensor(x)).asnumpy()
    worst = max(worst, float(np.abs(ours - theirs[:, in_frames - 1:].numpy()).max()))

    # training path: a fixed coin-flip mask, as on_train_batch_start writes it
    reverse = v2 and config.get("reverse_scheduled_sampling", True)
    columns = in_frames - 1 + out_frames - 1 if reverse else out_frames - 1
    mask = (rng.random((4, columns, 1, 1, 1)) < 0.5).astype(np.float32)
    ops.assign(model.sampling_mask, Tensor(mask))
    names = ("context", "decouple") if v2 else ("context",)
    ours = [t.asnumpy() for t in TrainingForward(model, names)(Tensor(x), Tensor(y))]
    masks = torch.from_numpy(mask[:batch])
    input_mask, forecast_mask = (masks[:, :in_frames - 1], masks[:, in_frames - 1:]) if reverse else (None, masks)
    with torch.no_grad():
        frames, increments = twin.net(tx, out_frames, ty, forecast_mask, input_mask)
        context = (in_frames - 1) / out_frames * F.mse_loss(frames[:, :in_frames - 1], tx[:, 1:])
        theirs = [frames[:, in_frames - 1:], context]
        if v2:
            theirs.append(config.get("decouple_beta", 0.1) * twin.decoupling(increments))
    for a, b in zip(ours, theirs):
        worst = max(worst, float(np.abs(a - b.numpy()).max()))
    return worst


def maxdiffs():
    """``{"predrnn": float, "predrnn_v2": float}``: each model's largest difference over :data:`CONFIGS`."""
    ms.set_context(mode=ms.GRAPH_MODE)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    return {name: max(compare(name, config) for config in configs) for name, configs in CONFIGS.items()}


if __name__ == "__main__":
    print(json.dumps(maxdiffs()))
