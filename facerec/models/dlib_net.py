"""dlib's face descriptor network in torch, with the weights read from dlib's own ``.dat`` file.

Why: the PyPI dlib wheels have no BLAS, so dlib runs the network at ~118 ms per chip on
one core, holding the GIL. The same 29 convolutions in torch (oneDNN, every core) take a
fraction of that, which is what a warm ``identify`` and LFW evaluation spend their time
on. The outputs agree with dlib's to float rounding (tests/test_dlib_net.py compares
them on the sample faces; ``benchmarks/dlib_alignment.py --backends`` on LFW).

The network (dlib's ``dnn_face_recognition_ex.cpp``): a 7x7/2 convolution and 3x3/2 max
pool, then residual blocks of two 3x3 convolutions with an affine (frozen batch norm)
after each: three at 32 channels, four at 64, three at 128, three at 256 and one more at
256, the first of each stage after the 32s with stride 2. A strided block's shortcut is
a 2x2/2 average pool of its input; dlib's ``add_prev`` adds tensors of different shapes
by zero-padding the smaller (more channels, and one extra row and column where the
pooled shortcut is 4x4 and the block's output 3x3). Then the global mean and a
128x256 linear map without bias. Input: the 150x150 RGB chip minus dlib's channel
means, divided by 256.

The ``.dat`` format (dlib's ``serialize``): integers as a byte count (high bit: negative)
then that many little-endian bytes; strings as such an integer length then the bytes;
floats as an integer mantissa and exponent; tensors as version 2, four integer
dimensions, then raw little-endian float32. Layers are written from the input up, so
reading the ``con_``, ``affine_`` and ``fc_`` records in file order gives the forward
order. Every shape is checked against the architecture above; any other file is
refused with a one-line error.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerec.errors import ModelError
from facerec.models.skip_init import SkipRandomInit

CHIP_SIZE = 150
#: Channels of each residual block after the stem, in order; a change of width (and the
#: 256 after 256) starts a strided block.
BLOCKS = (32,) * 3 + (64,) * 4 + (128,) * 3 + (256,) * 3 + (256,)
STRIDED = frozenset({3, 7, 10, 13})
STEM_CHANNELS = 32
EMBEDDING_DIM = 128
_RECORD = re.compile(rb"\x01\x05con_4|\x01\x07affine_|\x01\x04fc_2|\x01\x15input_rgb_image_sized")


class _Reader:
    """dlib's serialised integers, floats and tensors from a byte string."""

    def __init__(self, data: bytes, at: int) -> None:
        self.data, self.at = data, at

    def integer(self) -> int:
        head = self.data[self.at]
        size, negative = head & 0x0F, head & 0x80
        value = int.from_bytes(self.data[self.at + 1 : self.at + 1 + size], "little")
        self.at += 1 + size
        return -value if negative else value

    def real(self) -> float:
        mantissa = self.integer()
        return float(mantissa) * 2.0 ** self.integer()

    def tensor(self) -> np.ndarray:
        if self.integer() != 2:
            raise ValueError("tensor version")
        shape = [self.integer() for _ in range(4)]
        count = int(np.prod(shape))
        values = np.frombuffer(self.data, "<f4", count, self.at)
        self.at += 4 * count
        return values.astype(np.float32)


def read_dat(path: str | Path) -> tuple[np.ndarray, list[dict]]:
    """(channel means, layer records in forward order) of a dlib face descriptor ``.dat`` file."""
    data = Path(path).read_bytes()
    means, records = None, []
    try:
        for match in _RECORD.finditer(data):
            kind = match.group(0)[2:].rstrip(b"_0123456789").decode()
            reader = _Reader(data, match.end())
            if kind == "input_rgb_image_sized":
                means = np.array([reader.real() for _ in range(3)], np.float32)
            elif kind == "con":
                params = reader.tensor()
                filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (reader.integer() for _ in range(7))
                records.append(
                    {"kind": kind, "params": params, "filters": filters, "kernel": (rows, cols),
                     "stride": (stride_y, stride_x), "padding": (pad_y, pad_x)}
                )  # fmt: skip
            elif kind == "affine":
                records.append({"kind": kind, "params": reader.tensor()})
            else:  # fc_2: outputs, inputs, then the weights (inputs x outputs)
                outputs, inputs = reader.integer(), reader.integer()
                records.append({"kind": kind, "params": reader.tensor(), "shape": (inputs, outputs)})
    except (ValueError, IndexError) as exc:
        raise ModelError(f"{path}: not dlib's face descriptor network ({exc})") from exc
    if means is None:
        raise ModelError(f"{path}: not dlib's face descriptor network (no input layer)")
    return means, records


class _Block(nn.Module):
    """conv -> affine -> relu -> conv -> affine, plus the (pooled, zero-padded) input, then relu."""

    def __init__(self, channels_in: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 0 if stride > 1 else 1)
        self.scale1 = nn.Parameter(torch.ones(channels, 1, 1))
        self.shift1 = nn.Parameter(torch.zeros(channels, 1, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.scale2 = nn.Parameter(torch.ones(channels, 1, 1))
        self.shift2 = nn.Parameter(torch.zeros(channels, 1, 1))
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x) * self.scale1 + self.shift1)
        y = self.conv2(y) * self.scale2 + self.shift2
        shortcut = F.avg_pool2d(x, 2, 2) if self.stride > 1 else x
        return F.relu(_padded_sum(y, shortcut))


def _padded_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum at the larger of each dimension, the smaller zero-padded."""
    if a.shape == b.shape:
        return a + b
    shape = [max(p, q) for p, q in zip(a.shape, b.shape)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))

    return pad(a) + pad(b)


class DlibFaceNet(nn.Module):
    """dlib's ResNet face descriptor: (N, 3, 150, 150) uint8-valued RGB -> raw (N, 128) descriptors."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("means", torch.zeros(1, 3, 1, 1))
        self.stem = nn.Conv2d(3, STEM_CHANNELS, 7, 2, 0)
        self.stem_scale = nn.Parameter(torch.ones(STEM_CHANNELS, 1, 1))
        self.stem_shift = nn.Parameter(torch.zeros(STEM_CHANNELS, 1, 1))
        widths = (STEM_CHANNELS, *BLOCKS)
        self.blocks = nn.Sequential(
            *(_Block(widths[i], widths[i + 1], 2 if i in STRIDED else 1) for i in range(len(BLOCKS)))
        )
        self.fc = nn.Linear(BLOCKS[-1], EMBEDDING_DIM, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips.float() - self.means) / 256.0
        x = F.relu(self.stem(x) * self.stem_scale + self.stem_shift)
        x = self.blocks(F.max_pool2d(x, 3, 2))
        return self.fc(x.mean(dim=(2, 3)))

    @classmethod
    def from_dat(cls, path: str | Path) -> DlibFaceNet:
        """The network with the weights of dlib's ``.dat`` file (shapes checked against ours)."""
        means, records = read_dat(path)
        with SkipRandomInit():  # every parameter is overwritten below
            net = cls()
        convs = [net.stem] + [c for b in net.blocks for c in (b.conv1, b.conv2)]
        affines = [(net.stem_scale, net.stem_shift)] + [
            pair for b in net.blocks for pair in ((b.scale1, b.shift1), (b.scale2, b.shift2))
        ]
        kinds = [r["kind"] for r in records]
        if kinds != ["con", "affine"] * len(convs) + ["fc"]:
            raise ModelError(f"{path}: not dlib's face descriptor network ({len(kinds)} layers)")
        with torch.no_grad():
            net.means.copy_(torch.from_numpy(means).view(1, 3, 1, 1))
            for conv, (scale, shift), con, affine in zip(convs, affines, records[0::2], records[1::2]):
                expected = (conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
                found = (con["filters"], con["kernel"], con["stride"], con["padding"])
                weight = conv.weight.numel()
                if expected != found or con["params"].size != weight + conv.out_channels:
                    raise ModelError(f"{path}: layer {found} does not match dlib's face descriptor network {expected}")
                conv.weight.copy_(torch.from_numpy(con["params"][:weight]).view_as(conv.weight))
                conv.bias.copy_(torch.from_numpy(con["params"][weight:]))
                if affine["params"].size != 2 * conv.out_channels:
                    raise ModelError(f"{path}: an affine layer does not match dlib's face descriptor network")
                gamma, beta = np.split(affine["params"], 2)
                scale.copy_(torch.from_numpy(gamma).view_as(scale))
                shift.copy_(torch.from_numpy(beta).view_as(shift))
            fc = records[-1]
            if fc["shape"] != (BLOCKS[-1], EMBEDDING_DIM):
                raise ModelError(f"{path}: final layer {fc['shape']} is not dlib's (256, 128)")
            net.fc.weight.copy_(torch.from_numpy(fc["params"]).view(fc["shape"]).T)
        return net.eval().requires_grad_(False)
