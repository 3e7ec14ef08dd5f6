"""``facerec keys``: a key is printed once, only its hash is stored, and it can be listed and revoked."""

from __future__ import annotations

import json
import stat

import pytest

from facerec.cli import main
from facerec.service.keys import KeyStore, allows, default_keys_path, key_hash


def run_json(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_new_key_is_shown_once_and_only_its_hash_is_stored(tmp_path, capsys):
    gallery = tmp_path / "gallery"
    made = run_json(capsys, "keys", "add", "door", "--role", "read", "--gallery", str(gallery))
    key = made["key"]
    path = default_keys_path(gallery)
    assert made["keys_file"] == str(path) and path.parent == gallery.parent  # beside, not inside, the gallery
    text = path.read_text()
    assert key not in text and key_hash(key) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    listed = run_json(capsys, "keys", "list", "--gallery", str(gallery))["keys"]
    assert [(k["name"], k["role"]) for k in listed] == [("door", "read")]
    assert key_hash(key) not in json.dumps(listed)
    assert KeyStore(path).lookup(key).name == "door"


def test_removing_a_key_revokes_it(tmp_path, capsys):
    keys = str(tmp_path / "keys.json")
    key = run_json(capsys, "keys", "add", "app", "--role", "write", "--keys", keys)["key"]
    assert run_json(capsys, "keys", "remove", "app", "--keys", keys) == {"removed": "app", "role": "write"}
    assert KeyStore(keys).lookup(key) is None
    assert not KeyStore(keys).configured()


def test_duplicate_names_unknown_keys_and_bad_files_are_one_line_errors(tmp_path, capsys):
    keys = str(tmp_path / "keys.json")
    assert main(["keys", "add", "app", "--role", "read", "--keys", keys]) == 0
    capsys.readouterr()
    assert main(["keys", "add", "app", "--role", "write", "--keys", keys]) == 2
    assert "exists already" in capsys.readouterr().err
    assert main(["keys", "remove", "nobody", "--keys", keys]) == 2
    assert "no key named 'nobody'" in capsys.readouterr().err
    (tmp_path / "keys.json").write_text("{not json")
    assert main(["keys", "list", "--keys", keys]) == 2
    assert "cannot read API keys file" in capsys.readouterr().err


def test_every_key_is_different_and_write_includes_read(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    made = {store.add(f"k{i}", "read") for i in range(5)}
    assert len(made) == 5 and all(len(k) > 40 for k in made)
    assert allows("write", "read") and allows("read", "read") and not allows("read", "write")
    with pytest.raises(Exception, match="unknown role"):
        store.add("x", "admin")
