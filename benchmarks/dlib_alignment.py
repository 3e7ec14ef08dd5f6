"""Choose dlib-resnet's alignment on LFW View 1 *train* pairs only (pairsDevTrain; never DevTest / View 2).

Compares, on the same crops: the face box (dlib's HOG detector inside our MTCNN crop vs
the fixed box our crop geometry gives), the landmark model (5 vs 68 points) and flip
test-time augmentation (on by default since it won here), and cosine similarity of unit
vectors against the Euclidean distance of dlib's raw vectors (what its metric was trained
on). Prints 10-fold accuracy and AUC per variant, and the median HOG box as fractions of
the crop (the fixed ``CROP_BOX``). ``--backends`` also runs dlib's own network on the same
chips and prints how far the torch backend's raw vectors are from it and both speeds.

    python benchmarks/dlib_alignment.py --data /work/shared/data/lfw --crops /work/cache/crops/lfw-224 --pairs 2200

All 2,200 pairsDevTrain pairs (3,443 crops), 10-fold: chip alone 0.9841 (AUC 0.99936), raw
Euclidean 0.9882, flip 0.9923 (AUC 0.99960), flip with raw Euclidean 0.9891.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from facerec.data.datasets import LFW, read_pairs
from facerec.evaluation import metrics
from facerec.models import create_embedder
from facerec.models.frozen import unit_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="LFW root")
    parser.add_argument("--crops", required=True, help="crop folder (our MTCNN crops)")
    parser.add_argument("--pairs", type=int, default=500, help="pairsDevTrain pairs used (those whose crops exist)")
    parser.add_argument("--landmarks68", action="store_true", help="also try the 68-point landmark model")
    parser.add_argument("--backends", action="store_true", help="compare the torch backend with dlib's own network")
    args = parser.parse_args()

    lfw = LFW.at(args.data)
    crops_dir = __import__("pathlib").Path(args.crops)
    pairs = [
        p
        for p in read_pairs(lfw.root / "pairsDevTrain.txt", crops_dir, check_exists=False)
        if p.path1.is_file() and p.path2.is_file()
    ]
    same = [p for p in pairs if p.same][: args.pairs // 2]
    diff = [p for p in pairs if not p.same][: args.pairs // 2]
    pairs = same + diff
    paths = list(dict.fromkeys(x for p in pairs for x in (p.path1, p.path2)))
    row = {p: i for i, p in enumerate(paths)}
    crops = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    labels = np.array([p.same for p in pairs])
    print(f"{len(pairs)} pairsDevTrain pairs ({len(same)} same), {len(paths)} crops")

    plain_model = create_embedder("dlib-resnet", flip=False)  # its HOG detector and descriptor serve every variant
    boxes = [list(plain_model.chipper.hog(c, 0)) for c in crops]
    found = [min(b, key=lambda r: (r.center().x - 112) ** 2 + (r.center().y - 112) ** 2) for b in boxes if b]
    side = crops[0].shape[0]
    median = np.median([[r.left(), r.top(), r.right(), r.bottom()] for r in found], axis=0) / side
    print(f"HOG found a face in {len(found)}/{len(crops)} crops; median box (l, t, r, b) / side: {np.round(median, 3)}")

    from facerec.faces.chips import CROP_BOX

    print(f"(CROP_BOX, used when HOG finds nothing and by box=crop: {CROP_BOX})")

    def score(vectors: np.ndarray, euclidean: bool = False) -> str:
        """Cosine similarity of the pairs' vectors, or minus their Euclidean distance (raw vectors)."""
        first, second = ([row[p.path1] for p in pairs], [row[p.path2] for p in pairs])
        if euclidean:
            s = -np.linalg.norm(vectors[first] - vectors[second], axis=1)
        else:
            v = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
            s = np.einsum("nd,nd->n", v[first], v[second])
        acc = metrics.kfold_accuracy(s, labels)
        acc = acc[0] if isinstance(acc, tuple) else acc
        return f"accuracy {acc:.4f}  AUC {metrics.roc_auc(s, labels):.4f}"

    # Each chip and its mirror are described once: every variant below is arithmetic on these raw vectors.
    start = time.perf_counter()
    chips = plain_model.chips(crops)
    raw = plain_model.describe(chips)
    seconds = (time.perf_counter() - start) / len(crops)
    flipped = plain_model.describe([np.ascontiguousarray(c[:, ::-1]) for c in chips])
    if args.backends:
        compare_backends(chips, raw, seconds)
    print(f"{'hog box, 5 points':24s} {score(raw)}  ({seconds * 1000:.0f} ms wall/crop)", flush=True)
    # dlib trains its metric on Euclidean distances of unnormalised vectors
    print(f"{'  ... Euclidean, raw':24s} {score(raw, euclidean=True)}", flush=True)
    # flip (the default): the mean of the chip's and its mirror's unit vectors
    print(f"{'hog box, 5 points, flip':24s} {score(unit_rows(raw) + unit_rows(flipped))}", flush=True)
    print(f"{'  ... Euclidean, raw':24s} {score(raw + flipped, euclidean=True)}", flush=True)
    variants = [("crop box, 5 points", {"box": "crop"})]
    variants += [("hog box, 68 points", {"landmarks": 68})] if args.landmarks68 else []
    for label, options in variants:
        vectors = create_embedder("dlib-resnet", flip=False, **options).embed_arrays(crops)
        print(f"{label:24s} {score(vectors)}", flush=True)


def compare_backends(chips: list[np.ndarray], raw: np.ndarray, torch_seconds: float) -> None:
    """dlib's own network (one process) on the chips the torch backend described: differences and speed."""
    own = create_embedder("dlib-resnet", flip=False, backend="dlib", workers=1)
    start = time.perf_counter()
    reference = own.describe(chips)
    seconds = (time.perf_counter() - start) / len(chips)
    cosine = np.einsum("nd,nd->n", unit_rows(raw), unit_rows(reference))
    print(
        f"backends on {len(chips)} chips: max |torch - dlib| {np.abs(raw - reference).max():.2e} "
        f"(values up to {np.abs(reference).max():.2f}), min cosine {cosine.min():.7f}; "
        f"dlib {seconds * 1000:.1f} ms/chip, torch (with HOG, landmarks, chip) {torch_seconds * 1000:.1f} ms/crop",
        flush=True,
    )


if __name__ == "__main__":
    main()
