"""Inspect and maintain a gallery: list, show NAME, remove NAME, stats, rebuild-index.

remove erases an identity's rows, embeddings and index vectors (right to erasure).
rebuild-index rebuilds the faiss index from the database, optionally as another
kind: flat (exact), hnsw or ivf (approximate, for large galleries).
"""

from __future__ import annotations

import argparse

from facerec.cli.commands import add_json_flag, emit
from facerec.cli.commands._recognition import add_gallery_argument

INDEX_KINDS = ("flat", "hnsw", "ivf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_gallery_argument(parser)
    add_json_flag(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="identities with their image counts")
    actions.add_parser("show", help="one identity's images").add_argument("name", metavar="NAME")
    actions.add_parser("remove", help="erase an identity (rows, embeddings, index vectors)").add_argument(
        "name", metavar="NAME"
    )
    actions.add_parser("stats", help="counts, model, index state, sizes")
    rebuild = actions.add_parser("rebuild-index", help="rebuild the faiss index from the database")
    rebuild.add_argument("--kind", choices=(*INDEX_KINDS, "auto"), default=None, help="switch the index kind")
    rebuild.add_argument("--m", type=int, default=None, help="hnsw: links per node")
    rebuild.add_argument("--ef-construction", type=int, default=None, help="hnsw: build-time beam width")
    rebuild.add_argument("--ef-search", type=int, default=None, help="hnsw: search-time beam width")
    rebuild.add_argument("--nlist", type=int, default=None, help="ivf: number of lists (default ~4 sqrt(n))")
    rebuild.add_argument("--nprobe", type=int, default=None, help="ivf: lists visited per query")
    for sub in actions.choices.values():  # also accept the options after the action
        add_gallery_argument(sub, default=argparse.SUPPRESS)
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from facerec.errors import FacerecError
    from facerec.gallery.gallery import Gallery, default_gallery_dir

    path = args.gallery or default_gallery_dir()
    with Gallery(path) as gallery:
        if args.action == "list":
            identities = gallery.identities()
            text = "\n".join(f"{i['name']}\t{i['images']}" for i in identities) or f"(gallery {path} is empty)"
            emit(args, {"gallery": str(gallery.path), "identities": identities}, text)
        elif args.action == "show":
            shown = gallery.show(args.name)
            text = "\n".join(
                [f"{shown['name']}: {len(shown['images'])} images"]
                + [f"  #{im['id']} {im['source']} sha256:{im['sha256'][:12]}" for im in shown["images"]]
            )
            emit(args, shown, text)
        elif args.action == "remove":
            count = gallery.remove(args.name)
            emit(args, {"removed": args.name, "images": count}, f"removed {args.name} ({count} images)")
        elif args.action == "stats":
            emit(args, gallery.stats())
        else:
            if args.kind is None and any(
                v is not None for v in (args.m, args.ef_construction, args.ef_search, args.nlist, args.nprobe)
            ):
                raise FacerecError("index parameters need --kind (hnsw or ivf)")
            params = {
                k: v
                for k, v in (
                    ("m", args.m),
                    ("ef_construction", args.ef_construction),
                    ("ef_search", args.ef_search),
                    ("nlist", args.nlist),
                    ("nprobe", args.nprobe),
                )
                if v is not None
            }
            result = gallery.rebuild_index(args.kind, **params)
            emit(
                args,
                result,
                f"rebuilt a {result['kind']} index over {result['vectors']} vectors in {result['seconds']:.2f} s",
            )
    return 0
