"""MTCNN's cascade (P-, R-, O-net) with facenet-pytorch's networks and weights, without torchvision.

Why not ``facenet_pytorch.MTCNN`` itself: importing it imports torchvision, whose
``ops`` import ``torch._dynamo``: ~2 s of a cold ``facerec verify`` (issue 12's target
is 3 s in all). This module reads the same three state dicts from facenet-pytorch's
``data`` folder (found with ``importlib.util.find_spec``, nothing imported), builds the
same three networks (``load_state_dict(strict=True)`` checks every name and shape) and
follows ``facenet_pytorch.models.utils.detect_face`` step by step: the image pyramid
(area resampling), P-net candidates, NMS per scale (0.5) and per image (0.7), box
regression and squaring, R-net and O-net on 24 and 48 px patches, landmarks, and the
last NMS by the smaller box ("Min", with facenet-pytorch's numpy code path). Boxes,
probabilities and landmarks match facenet-pytorch's to float rounding
(tests/test_detect.py compares them on the sample photos).

NMS is greedy as torchvision's: scores sorted (stable) high to low, a box dropped when
its IoU with a kept box exceeds the threshold; boxes of different images are offset
apart so one call serves the batch.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerec.errors import ModelError
from facerec.models.skip_init import SkipRandomInit

WEIGHTS_PACKAGE = "facenet_pytorch"


def weights_dir() -> Path:
    """facenet-pytorch's ``data`` folder (``pnet.pt``, ``rnet.pt``, ``onet.pt``), without importing it."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "data" / "onet.pt").is_file():
            return Path(location) / "data"
    raise ModelError("face detection needs MTCNN's weights: pip install facenet-pytorch")


class PNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).contiguous()  # the Caffe weights' order
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


def _apart(boxes: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Boxes shifted by their group (image) index times the largest coordinate: groups never overlap."""
    return boxes + (groups.to(boxes) * (boxes.max() + 1))[:, None]


def nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices kept by greedy IoU suppression within each group, highest score first (torchvision's rule)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    boxes = _apart(boxes, groups)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    while order.numel():
        best, rest = order[0], order[1:]
        keep.append(best)
        top_left = torch.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = torch.minimum(boxes[best, 2:4], boxes[rest, 2:4])
        inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
        order = rest[inter / (area[best] + area[rest] - inter) <= threshold]
    return torch.stack(keep)


def nms_min(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """The last stage's suppression: overlap over the smaller box, +1 pixel areas (facenet-pytorch's numpy code)."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    b = _apart(boxes, groups).cpu().numpy()
    s = scores.cpu().numpy()
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    order, keep = np.argsort(s), []
    while order.size:
        i, rest = order[-1], order[:-1]
        w = np.maximum(0.0, np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]) + 1)
        h = np.maximum(0.0, np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]) + 1)
        keep.append(i)
        order = rest[w * h / np.minimum(area[i], area[rest]) <= threshold]
    return torch.as_tensor(np.array(keep, dtype=np.int64), device=boxes.device)


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - 127.5) * 0.0078125


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box grown to a square about its centre (in place, as facenet-pytorch's ``rerec``)."""
    h, w = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    side = torch.max(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side.repeat(2, 1).permute(1, 0)
    return boxes


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Box regression with +1 pixel sizes (in place, as facenet-pytorch's ``bbreg``)."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    boxes[:, :4] = torch.stack([boxes[:, 0] + offsets[:, 0] * w, boxes[:, 1] + offsets[:, 1] * h,
                                boxes[:, 2] + offsets[:, 2] * w, boxes[:, 3] + offsets[:, 3] * h], dim=1)  # fmt: skip
    return boxes


def _patches(images: torch.Tensor, boxes: torch.Tensor, owners: torch.Tensor, size: int) -> torch.Tensor:
    """The boxes' pixels (clipped to the image, 1-based as in the Caffe original), resampled to ``size``."""
    h, w = images.shape[2:4]
    b = boxes.trunc().int().cpu().numpy()
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    if np.any(ey <= y - 1) or np.any(ex <= x - 1):  # facenet-pytorch fails here too (RuntimeError)
        raise RuntimeError("MTCNN: a candidate box lies outside the image")
    return _normalise(
        torch.cat(
            [F.interpolate(images[owners[k], :, y[k] - 1 : ey[k], x[k] - 1 : ex[k]][None], (size, size), mode="area")
             for k in range(len(b))]
        )
    )  # fmt: skip


def _scored(boxes: torch.Tensor, probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The boxes whose face probability passes ``threshold``, with it as their fifth column; and the mask."""
    score = probs[:, 1]
    passed = score > threshold
    return torch.cat((boxes[passed, :4], score[passed].unsqueeze(1)), dim=1), passed


class Cascade(nn.Module):
    """P-, R- and O-net with facenet-pytorch's weights; ``detect`` on a batch of equal-sized RGB images."""

    def __init__(
        self, min_face_size: int, thresholds: tuple[float, float, float], factor: float, device: str = "cpu"
    ) -> None:
        super().__init__()
        self.min_face_size, self.thresholds, self.factor = min_face_size, tuple(thresholds), factor
        with SkipRandomInit():  # every weight comes from the state dicts (strict)
            self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        folder = weights_dir()
        for name in ("pnet", "rnet", "onet"):
            state = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
            getattr(self, name).load_state_dict(state)
        self.device = torch.device(device)
        self.to(self.device).eval().requires_grad_(False)

    def scales(self, height: int, width: int) -> list[float]:
        """The image pyramid: faces of ``min_face_size`` px map to P-net's 12 px, shrinking by ``factor``."""
        scale = 12.0 / self.min_face_size
        shorter, out = min(height, width) * scale, []
        while shorter >= 12:
            out.append(scale)
            scale, shorter = scale * self.factor, shorter * self.factor
        return out

    @torch.inference_mode()
    def detect(self, images: list) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image: boxes (k, 5: x1, y1, x2, y2, probability) and landmarks (k, 5, 2), as facenet-pytorch."""
        pixels = torch.as_tensor(np.stack([np.uint8(im) for im in images]), device=self.device)
        pixels = pixels.permute(0, 3, 1, 2).float()
        boxes, owners = self._propose(pixels)
        points = torch.zeros(0, 5, 2, device=self.device)
        if len(boxes):
            boxes, owners = self._refine(pixels, boxes, owners)
        if len(boxes):
            boxes, owners, points = self._output(pixels, boxes, owners)
        boxes, points, owners = boxes.cpu().numpy(), points.cpu().numpy(), owners.cpu().numpy()
        return [(boxes[owners == i].copy(), points[owners == i].copy()) for i in range(len(images))]

    def _propose(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-net over the pyramid: candidates kept by NMS per scale and image, regressed and squared."""
        h, w = pixels.shape[2:4]
        found, owners = [torch.zeros(0, 9, device=self.device)], [torch.zeros(0, dtype=torch.int64, device=self.device)]
        for scale in self.scales(h, w):
            resized = F.interpolate(pixels, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
            offsets, probs = self.pnet(_normalise(resized))
            mask = probs[:, 1] >= self.thresholds[0]
            cells = mask.nonzero()
            grid = cells[:, 1:].to(offsets.dtype).flip(1)  # (x, y) of each 12 px cell, stride 2
            candidates = torch.cat(
                [((2 * grid + 1) / scale).floor(), ((2 * grid + 12) / scale).floor(),
                 probs[:, 1][mask].unsqueeze(1), offsets.permute(1, 0, 2, 3)[:, mask].permute(1, 0)], dim=1
            )  # fmt: skip
            keep = nms(candidates[:, :4], candidates[:, 4], cells[:, 0], 0.5)
            found.append(candidates[keep])
            owners.append(cells[:, 0][keep])
        boxes, owner = torch.cat(found), torch.cat(owners)
        keep = nms(boxes[:, :4], boxes[:, 4], owner, 0.7)
        boxes, owner = boxes[keep], owner[keep]
        w_, h_ = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        regressed = torch.stack(
            [boxes[:, 0] + boxes[:, 5] * w_, boxes[:, 1] + boxes[:, 6] * h_,
             boxes[:, 2] + boxes[:, 7] * w_, boxes[:, 3] + boxes[:, 8] * h_, boxes[:, 4]], dim=1
        )  # fmt: skip
        return _square(regressed), owner

    def _refine(self, pixels, boxes, owners) -> tuple[torch.Tensor, torch.Tensor]:
        """R-net on 24 px patches: score, NMS 0.7, regress, square."""
        offsets, probs = self.rnet(_patches(pixels, boxes, owners, 24))
        boxes, passed = _scored(boxes, probs, self.thresholds[1])
        owners, offsets = owners[passed], offsets[passed]
        keep = nms(boxes[:, :4], boxes[:, 4], owners, 0.7)
        return _square(_regress(boxes[keep], offsets[keep])), owners[keep]

    def _output(self, pixels, boxes, owners) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """O-net on 48 px patches: score, landmarks, regress, NMS by the smaller box."""
        offsets, marks, probs = self.onet(_patches(pixels, boxes, owners, 48))
        boxes, passed = _scored(boxes, probs, self.thresholds[2])
        owners, offsets, marks = owners[passed], offsets[passed], marks[passed]
        w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
        points = torch.stack(
            (w[:, None] * marks[:, :5] + boxes[:, 0:1] - 1, h[:, None] * marks[:, 5:10] + boxes[:, 1:2] - 1), dim=2
        )
        boxes = _regress(boxes, offsets)
        keep = nms_min(boxes[:, :4], boxes[:, 4], owners, 0.7)
        return boxes[keep], owners[keep], points[keep]
