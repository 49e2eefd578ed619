"""SimVP: a spatial encoder, a temporal translator over the frames stacked into channels, a spatial decoder.

Gao et al., "SimVP: Simpler yet Better Video Prediction", CVPR 2022, with the gated spatiotemporal attention (gSTA)
translator block of Tan et al., "SimVP: Towards Simple yet Powerful Spatiotemporal Predictive Learning", 2023
(arXiv:2211.12509, the OpenSTL paper). Written here from the papers' equations.

Network, for inputs ``x`` of shape (B, T, C, H, W):

* optionally (``patch`` > 1), each frame cut into ``patch x patch`` patches stacked into channels (pixel unshuffle),
  undone after the decoder: the encoder and decoder then cost ``patch**2`` times less (not in the papers; ``patch=1``
  is their network);
* encoder, per frame: ``N_S`` conv blocks ``SiLU(GroupNorm(2, conv k x k))`` of ``hid_S`` channels; blocks 2, 4, ...
  have stride 2, so the latent is (H, W) / 2**(N_S // 2). The first block's output is kept as a skip.
* translator: the ``T`` latents stacked into ``T * hid_S`` channels, ``N_T`` blocks; the first widens to ``hid_T``
  channels after its block, the last narrows back to ``T * hid_S`` (1x1 convs). A gSTA block over ``z``::

      z = z + s1 * A(BN(z)),   A(u) = P2(G(GELU(P1(u)))) + u      (P1, P2: 1x1 convs)
      G(u) = sigmoid(g) * f,   [f, g] = Conv1x1(DWD(DW(u)))        (DW: depthwise (2d-1)^2, DWD: depthwise
                                                                    dilated by d, together a k x k receptive field)
      z = z + s2 * M(BN(z)),   M(u) = FC2(GELU(DW3x3(FC1(u))))     (FC: 1x1 convs, mlp_ratio wider)

  ``s1``, ``s2`` are per-channel layer scales started at ``layer_scale_init``. The paper's drop path is left out:
  random ops inside the compiled step would break msforge's exact resume.
* decoder: the mirror of the encoder (upsampling blocks: conv to 4x channels + PixelShuffle(2)); the last block reads
  its input plus the encoder's first-block skip; a 1x1 conv reads out ``C`` channels.

The translator maps ``T`` frames to ``T`` frames. For ``out_frames > in_frames`` the network is rolled forward on its
own predictions and the frames concatenated, for fewer the first ``out_frames`` are kept (as OpenSTL does).
"""
from msforge.layers import GELU, GLU, Conv2d, GroupNorm, SiLU  # first: msforge caps oneDNN's ISA before mindspore loads

import math

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from models.base import VideoPredictionModule

__all__ = ["ConvBlock", "SpatialEncoder", "SpatialDecoder", "LargeKernelConv", "GatedSpatialAttention",
           "AttentionBranch", "MixMLP", "TranslatorBlock", "Translator", "SimVPNet", "SimVP", "exact_gelu"]


def exact_gelu():
    """Exact GELU ``x * Phi(x)`` (erf), as the papers' PyTorch ``nn.GELU()``; MindSpore's default is the tanh form."""
    return GELU(approximate=False)


def conv(in_channels, out_channels, kernel_size, stride=1, dilation=1, group=1, has_bias=True):
    """Conv with symmetric "same" zero padding ``dilation * (k - 1) / 2`` (odd ``k``), as PyTorch's padding argument."""
    return Conv2d(in_channels, out_channels, kernel_size, stride=stride, pad_mode="pad",
                  padding=dilation * (kernel_size - 1) // 2, dilation=dilation, group=group, has_bias=has_bias)


def _check_odd(name, value):
    if not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"{name}={value!r}: must be an odd positive int (convolutions keep the frame size)")


# -- spatial encoder / decoder ---------------------------------------------------------------------------------------
class ConvBlock(nn.Cell):
    """``SiLU(GroupNorm(2, conv(x)))``; ``resample``: "down" (stride 2), "up" (conv to 4x channels, PixelShuffle(2))
    or None."""

    def __init__(self, in_channels, out_channels, kernel_size=3, resample=None):
        super().__init__()
        self.upsample = resample == "up"
        out = out_channels * 4 if self.upsample else out_channels
        self.conv = conv(in_channels, out, kernel_size, stride=2 if resample == "down" else 1)
        self.norm = GroupNorm(2, out_channels)
        self.act = SiLU()

    def construct(self, x):
        x = self.conv(x)
        if self.upsample:
            x = ops.pixel_shuffle(x, 2)
        return self.act(self.norm(x))


def _resampled(n_blocks):
    """Which of ``n_blocks`` encoder blocks downsample: every second one, starting with the second."""
    return [i % 2 == 1 for i in range(n_blocks)]


class SpatialEncoder(nn.Cell):
    """``N_S`` ConvBlocks of ``hid_S`` channels, every second one strided; ``construct(x) -> (latent, skip)``."""

    def __init__(self, in_channels, hid_S, N_S, kernel_size):
        super().__init__()
        self.blocks = nn.CellList([ConvBlock(in_channels if i == 0 else hid_S, hid_S, kernel_size,
                                             "down" if down else None) for i, down in enumerate(_resampled(N_S))])

    def construct(self, x):
        skip = self.blocks[0](x)
        x = skip
        for block in self.blocks[1:]:
            x = block(x)
        return x, skip


class SpatialDecoder(nn.Cell):
    """Mirror of :class:`SpatialEncoder`: ``N_S`` ConvBlocks (upsampling where the encoder downsampled); the last one
    reads ``x + skip``; then a 1x1 conv to ``out_channels``."""

    def __init__(self, hid_S, out_channels, N_S, kernel_size):
        super().__init__()
        self.blocks = nn.CellList([ConvBlock(hid_S, hid_S, kernel_size, "up" if up else None)
                                   for up in reversed(_resampled(N_S))])
        self.readout = conv(hid_S, out_channels, 1)

    def construct(self, x, skip):
        for block in self.blocks[:-1]:
            x = block(x)
        return self.readout(self.blocks[-1](x + skip))


# -- translator ------------------------------------------------------------------------------------------------------
class LargeKernelConv(nn.Cell):
    """A k x k depthwise conv decomposed as a depthwise (2d-1)^2 conv then a depthwise conv dilated by d (VAN's large
    kernel attention; Guo et al. 2022), whose kernel is the odd number nearest below k/d."""

    def __init__(self, dim, kernel_size=21, dilation=3):
        super().__init__()
        local = 2 * dilation - 1
        wide = kernel_size // dilation
        wide = wide if wide % 2 else wide - 1
        self.local = conv(dim, dim, local, group=dim)
        self.wide = conv(dim, dim, wide, dilation=dilation, group=dim)

    def construct(self, x):
        return self.wide(self.local(x))


class GatedSpatialAttention(nn.Cell):
    """gSTA's attention unit: ``[f, g] = Conv1x1(LargeKernelConv(x))`` (2 * dim channels), ``sigmoid(g) * f``."""

    def __init__(self, dim, kernel_size=21, dilation=3):
        super().__init__()
        self.large_kernel = LargeKernelConv(dim, kernel_size, dilation)
        self.gate_conv = conv(dim, 2 * dim, 1)
        self.gate = GLU(axis=1)  # [f, g] -> f * sigmoid(g)

    def construct(self, x):
        return self.gate(self.gate_conv(self.large_kernel(x)))


class AttentionBranch(nn.Cell):
    """``P2(unit(GELU(P1(x)))) + x`` with 1x1 convs ``P1``, ``P2`` around an attention ``unit``."""

    def __init__(self, dim, unit):
        super().__init__()
        self.proj_in = conv(dim, dim, 1)
        self.unit = unit
        self.proj_out = conv(dim, dim, 1)
        self.act = exact_gelu()

    def construct(self, x):
        return self.proj_out(self.unit(self.act(self.proj_in(x)))) + x


class MixMLP(nn.Cell):
    """``FC2(GELU(DW3x3(FC1(x))))``: 1x1 conv to ``hidden`` channels, depthwise 3x3, GELU, 1x1 conv back."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc_in = conv(dim, hidden, 1)
        self.depthwise = conv(hidden, hidden, 3, group=hidden)
        self.fc_out = conv(hidden, dim, 1)
        self.act = exact_gelu()

    def construct(self, x):
        return self.fc_out(self.act(self.depthwise(self.fc_in(x))))


class TranslatorBlock(nn.Cell):
    """A MetaFormer block on ``dim`` channels, then a 1x1 conv to ``out_dim`` if it differs:
    ``z += s1 * AttentionBranch(BN(z))``, ``z += s2 * MixMLP(BN(z))``. ``unit`` builds the attention unit from
    ``(dim, kernel_size)``: :class:`GatedSpatialAttention` (gSTA) here, TAU's unit in ``models/tau.py``."""

    def __init__(self, dim, out_dim, unit=GatedSpatialAttention, kernel_size=21, mlp_ratio=4.0,
                 layer_scale_init=1e-2):
        super().__init__()
        self.norm_attn = nn.BatchNorm2d(dim)
        self.attn = AttentionBranch(dim, unit(dim, kernel_size))
        self.norm_mlp = nn.BatchNorm2d(dim)
        self.mlp = MixMLP(dim, int(dim * mlp_ratio))
        self.scale_attn = Parameter(Tensor([layer_scale_init] * dim, ms.float32).reshape(dim, 1, 1), name="scale_attn")
        self.scale_mlp = Parameter(Tensor([layer_scale_init] * dim, ms.float32).reshape(dim, 1, 1), name="scale_mlp")
        self.reduction = conv(dim, out_dim, 1) if out_dim != dim else None

    def construct(self, z):
        z = z + self.scale_attn * self.attn(self.norm_attn(z))
        z = z + self.scale_mlp * self.mlp(self.norm_mlp(z))
        if self.reduction is not None:
            z = self.reduction(z)
        return z


class Translator(nn.Cell):
    """``N_T`` (>= 2) :class:`TranslatorBlock` s over ``channels`` stacked channels: ``channels -> hid_T``, then
    ``hid_T -> hid_T`` ... , then ``hid_T -> channels``."""

    def __init__(self, channels, hid_T, N_T, unit=GatedSpatialAttention, kernel_size=21, mlp_ratio=4.0,
                 layer_scale_init=1e-2):
        super().__init__()
        dims = [channels] + [hid_T] * (N_T - 1) + [channels]
        self.blocks = nn.CellList([TranslatorBlock(dims[i], dims[i + 1], unit, kernel_size, mlp_ratio,
                                                   layer_scale_init) for i in range(N_T)])

    def construct(self, z):
        for block in self.blocks:
            z = block(z)
        return z


# -- the network -----------------------------------------------------------------------------------------------------
class SimVPNet(nn.Cell):
    """Encoder, translator, decoder (see the module docstring); ``construct(x: (B, T, C, H, W)) -> (B, T, C, H, W)``
    with ``T = frames``. ``unit`` picks the translator's attention unit (gSTA by default)."""

    def __init__(self, frames=10, channels=1, hid_S=16, hid_T=128, N_S=4, N_T=4, spatio_kernel_enc=3,
                 spatio_kernel_dec=3, mlp_ratio=4.0, attention_kernel=21, layer_scale_init=1e-2, patch=1,
                 unit=GatedSpatialAttention):
        super().__init__()
        for name, value in (("hid_S", hid_S), ("hid_T", hid_T), ("frames", frames), ("channels", channels),
                            ("patch", patch)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be a positive int")
        if hid_S % 2:
            raise ValueError(f"hid_S={hid_S}: must be even (GroupNorm with 2 groups)")
        if not isinstance(N_S, int) or N_S < 2:
            raise ValueError(f"N_S={N_S!r}: need at least 2 encoder blocks (the first one is the decoder's skip)")
        if not isinstance(N_T, int) or N_T < 2:
            raise ValueError(f"N_T={N_T!r}: need at least 2 translator blocks (one widens to hid_T, one narrows)")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio={mlp_ratio!r}: must be positive")
        _check_odd("spatio_kernel_enc", spatio_kernel_enc)
        _check_odd("spatio_kernel_dec", spatio_kernel_dec)
        _check_odd("attention_kernel", attention_kernel)
        if attention_kernel < 9:
            raise ValueError(f"attention_kernel={attention_kernel}: must be >= 9 (a 5x5 conv then a 3x3 conv "
                             "dilated by 3)")
        self.frames, self.hid_S, self.patch = frames, hid_S, patch
        self.downsampling = patch * 2 ** (N_S // 2)
        self.encoder = SpatialEncoder(channels * patch * patch, hid_S, N_S, spatio_kernel_enc)
        self.translator = Translator(frames * hid_S, hid_T, N_T, unit, attention_kernel, mlp_ratio, layer_scale_init)
        self.decoder = SpatialDecoder(hid_S, channels * patch * patch, N_S, spatio_kernel_dec)

    def construct(self, x):
        b, t, c, h, w = x.shape
        frames = x.reshape(b * t, c, h, w)
        if self.patch > 1:
            frames = ops.pixel_unshuffle(frames, self.patch)
        latent, skip = self.encoder(frames)
        _, hid, h_lat, w_lat = latent.shape
        z = self.translator(latent.reshape(b, t * hid, h_lat, w_lat))
        y = self.decoder(z.reshape(b * t, hid, h_lat, w_lat), skip)
        if self.patch > 1:
            y = ops.pixel_shuffle(y, self.patch)
        return y.reshape(b, t, c, h, w)

    def rollout(self, x, out_frames):
        """``out_frames`` predictions from ``x`` (B, frames, C, H, W): one pass, then passes over its own predictions
        while more are needed; the first ``out_frames`` are returned."""
        outputs = []
        for _ in range(math.ceil(out_frames / self.frames)):
            x = self.construct(x)
            outputs.append(x)
        y = outputs[0] if len(outputs) == 1 else ops.concat(outputs, 1)
        return y if out_frames == self.frames else y[:, :out_frames]


class SimVP(VideoPredictionModule):
    """SimVP with gSTA translator blocks as an msforge model (see the module docstring for the network).

    ``hid_S``: encoder/decoder channels; ``hid_T``: translator channels; ``N_S``: encoder (and decoder) blocks, every
    second one strided; ``N_T``: translator blocks; ``spatio_kernel_enc``/``_dec``: their conv kernels; ``mlp_ratio``:
    width of the translator's MLP; ``attention_kernel``: receptive field of the large-kernel attention;
    ``layer_scale_init``: initial layer scales; ``patch``: frames are cut into ``patch x patch`` patches stacked into
    channels before the encoder (pixel unshuffle; 1 = the paper's network), which divides the encoder's and decoder's
    cost by ``patch**2``. Height and width must divide by ``patch * 2**(N_S // 2)``. The defaults are
    experiments/simvp_mnist.yaml's, sized for 2 CPU cores (1,040,612 parameters on 10 frames of 64x64x1); OpenSTL's
    Moving MNIST model is hid_S=64, hid_T=512, N_S=4, N_T=8, mlp_ratio=8, patch=1 (46.8M parameters).

    Subclasses swap the translator's attention unit by setting ``translator_unit`` (``models/tau.py``).
    """

    translator_unit = GatedSpatialAttention

    def __init__(self, hid_S=16, hid_T=128, N_S=4, N_T=4, spatio_kernel_enc=3, spatio_kernel_dec=3, mlp_ratio=4.0,
                 attention_kernel=21, layer_scale_init=1e-2, patch=2, **kwargs):
        super().__init__(**kwargs)
        channels, height, width = self.frame_shape
        self.net = SimVPNet(self.in_frames, channels, hid_S, hid_T, N_S, N_T, spatio_kernel_enc, spatio_kernel_dec,
                            mlp_ratio, attention_kernel, layer_scale_init, patch, unit=self.translator_unit)
        factor = self.net.downsampling
        if height % factor or width % factor:
            raise ValueError(f"{type(self).__name__}: frame_shape={self.frame_shape} needs height and width divisible "
                             f"by patch * 2**(N_S // 2) = {factor}; change patch, N_S or the frame size")

    def construct(self, inputs):
        return self.net.rollout(inputs, self.out_frames)
