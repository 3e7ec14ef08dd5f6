"""Manage the REST API's keys: add (printed once, only its hash is stored), list, remove.

Roles: 'read' may verify, identify, list and show; 'write' may also enroll and delete.
The keys file sits beside the gallery (GALLERY.keys.json) unless --keys FILE is given.
"""

from __future__ import annotations

import argparse

from facerec.cli.commands import emit
from facerec.cli.commands._recognition import add_gallery_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="make a key and print it (once)")
    add.add_argument("name", metavar="NAME", help="who or what the key is for")
    add.add_argument("--role", choices=("read", "write"), required=True)
    actions.add_parser("list", help="list keys (names and roles, never the keys)")
    remove = actions.add_parser("remove", help="revoke a key (a running server stops accepting it)")
    remove.add_argument("name", metavar="NAME")
    for sub in actions.choices.values():
        add_gallery_argument(sub)
        sub.add_argument("--keys", metavar="FILE", default=None, help="keys file [beside the gallery]")
        sub.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from facerec.gallery.gallery import default_gallery_dir
    from facerec.service.keys import KeyStore, default_keys_path

    store = KeyStore(args.keys or default_keys_path(args.gallery or default_gallery_dir()))
    if args.action == "add":
        key = store.add(args.name, args.role)
        emit(
            args,
            {"name": args.name, "role": args.role, "key": key, "keys_file": str(store.path)},
            f"{key}\n(key {args.name!r}, role {args.role}: shown only now; its hash is in {store.path})",
        )
    elif args.action == "list":
        records = [r.public() for r in store.records()]
        text = (
            "\n".join(f"{r['name']}\t{r['role']}\t{r['created_at']}" for r in records) or f"(no keys in {store.path})"
        )
        emit(args, {"keys_file": str(store.path), "keys": records}, text)
    else:
        record = store.remove(args.name)
        emit(args, {"removed": record.name, "role": record.role}, f"removed key {record.name!r} ({record.role})")
    return 0
