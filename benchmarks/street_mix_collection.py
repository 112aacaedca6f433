"""The training collection of the street-to-shop mixing variant (issue 29, item 6): a catalogue
collection plus the photos of people (their stored vectors, e.g. top crops) of the VALIDATION half
of the street-to-shop queries, never the test half, with catalogue labels: the photo's category as
the articleType the label map lists first for it, its colour as a baseColour, its gender as Men or
Women. A photo without an agreed colour has no baseColour, so a run grouped by articleType and
baseColour does not train on it.

    .venv/bin/python benchmarks/street_mix_collection.py --catalogue /work/collections/fpi-small \\
        --photos /work/collections/clothing-top --out /work/collections/fpi-small-top-val

The half is the one ``transfer: [{..., label_map: MAP, queries: val}]`` scores
(:func:`vestis.train.transfer.cross_set`), so a run on this collection is judged on the test half
of the same photos without having seen them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vestis.store.collection import Collection, NewItem
from vestis.train.config import DataConfig, TransferSetConfig
from vestis.train.features import load_items
from vestis.train.transfer import cross_set

MAP = "configs/street-to-shop/clothing-attributes-to-fashion-product.yaml"
# the first articleType the map lists for each category (the map's values are sets)
ARTICLE_TYPE = {"shirt": "Shirts", "sweater": "Sweaters", "t-shirt": "Tshirts", "outerwear": "Jackets",
                "suit": "Blazers", "tank top": "Tops", "dress": "Dresses"}
BASE_COLOUR = {"black": "Black", "gray": "Grey", "white": "White", "brown": "Brown", "blue": "Blue",
               "green": "Green", "cyan": "Turquoise Blue", "yellow": "Yellow", "purple": "Purple", "red": "Red",
               "many_colors": "Multi"}
GENDER = {"male": "Men", "female": "Women"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--catalogue", type=Path, required=True)
    ap.add_argument("--photos", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    catalogue = load_items(DataConfig(collection=str(args.catalogue)), args.catalogue.parent)
    photos = load_items(DataConfig(collection=str(args.photos)), args.photos.parent)
    val = cross_set(TransferSetConfig(collection=str(args.photos), label_map=MAP, queries="val"), photos,
                    catalogue).items
    new = [NewItem(i, s, i, v, None, m) for i, s, v, m in
           zip(catalogue.ids, catalogue.sources, catalogue.vectors, catalogue.metadata)]
    for i, s, v, m in zip(val.ids, val.sources, val.vectors, val.metadata):
        labels = {"articleType": ARTICLE_TYPE[m["category"]], "gender": GENDER.get(m.get("gender"), ""),
                  **({"baseColour": BASE_COLOUR[m["colour"]]} if m.get("colour") in BASE_COLOUR else {})}
        new.append(NewItem(f"street-{i}", s, f"street-{i}", v, None, {**labels, "street": "yes"}))
    with Collection.create(args.out, encoder_name=catalogue.encoder_name, encoder_version=catalogue.encoder_version,
                           dim=catalogue.vectors.shape[1], colour_dim=0) as coll:
        for start in range(0, len(new), 5000):
            coll.upsert(new[start:start + 5000])
    trained = sum(1 for it in new[len(catalogue):] if "baseColour" in it.metadata)
    print(f"{args.out}: {len(catalogue)} catalogue items + {len(val)} photos of the val half "
          f"({trained} with a colour, trained on by articleType+baseColour runs)")


if __name__ == "__main__":
    main()
