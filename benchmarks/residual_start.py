"""Where a residual attribute model starts, out of domain (issue 16, BENCHMARKS.md "Transfer").

    .venv/bin/python benchmarks/residual_start.py --train runs/collections/fashion-product-images-small \\
        --transfer runs/collections/clothing-attributes:category \\
        --transfer runs/collections/fashion-mnist-5000:label --dims 64,256,512,768,1280

A residual attribute model (``head.residual``) starts every space as the backbone's global
embedding, centred on the training mean and projected on its first ``head.dim`` principal
directions (:meth:`vestis.train.attributes.embedder.AttributeEmbedder.fit_start`). This fits that
start on every item of ``--train`` (the model fits it on its training split) and scores it
leave-one-out on each transfer set (mAP@10, as ``vestis train`` does), beside the stored backbone
vectors. Prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.nn import functional as F

from vestis.train.attributes.embedder import AttributeEmbedder
from vestis.train.config import DataConfig
from vestis.train.features import load_items
from vestis.train.transfer import JUDGED_BY, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True, help="The training collection (fits centre and directions).")
    ap.add_argument("--transfer", action="append", required=True, help="COLLECTION:LABEL, one per set.")
    ap.add_argument("--dims", default="64,256,1280")
    args = ap.parse_args()
    train = load_items(DataConfig(collection=args.train), Path(args.train).parent)
    vectors = torch.from_numpy(train.vectors).float()
    dims = [int(d) for d in args.dims.split(",")]
    # principal directions are nested: one fit at the largest size serves every smaller one
    model = AttributeEmbedder(1, channels=1, global_dim=vectors.shape[1], dim=max(dims), residual=True)
    model.fit_start(vectors)
    print("| set | backbone | " + " | ".join(f"start {d}-d" for d in dims) + " |")
    print("|---|---|" + "---|" * len(dims))
    for spec in args.transfer:
        path, _, label = spec.rpartition(":")
        items = load_items(DataConfig(collection=path), Path(path).parent)
        labels = items.groups([label])
        base = scores(items.vectors, labels)[0][JUDGED_BY]
        with torch.no_grad():
            start = model.start(torch.from_numpy(items.vectors).float())
        cells = []
        for dim in dims:
            value = scores(F.normalize(start[:, :dim], dim=1).numpy(), labels)[0][JUDGED_BY]
            cells.append(f"{value:.4f} ({value / base - 1:+.1%})")
        print(f"| {Path(path).name} ({label}) | {base:.4f} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
