"""API tokens: created once, stored only as a hash, listed, revoked, audited."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from jobd.ops.scope import Scope
from jobd.ops.tokens import authenticate
from tests.clihelp import jobd, postgresql_url
from tests.conftest import wait_for

__all__ = ["postgresql_url"]  # the fixture alias, see tests.clihelp


def scope(store: Any) -> Scope:
    from jobd.core.model import Config, Settings

    return Scope(store, Config(settings=Settings(), jobs={}))


def test_token_create_prints_it_once_and_stores_only_a_hash(
    store_url: str, store: Any, tmp_path: Path
) -> None:
    made = jobd(store_url, tmp_path, "token", "create", "ci", "--group", "tenant-a", "--read-only")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("jobd_") and len(secret) > 50
    rows = store.db.execute_sql("SELECT * FROM api_tokens").fetchall()
    assert len(rows) == 1 and not any(secret in str(value) for value in rows[0])
    assert hashlib.sha256(secret.split("_", 2)[2].encode()).hexdigest() in rows[0]
    token = authenticate(scope(store), secret)
    assert token is not None
    assert (token.name, token.group, token.read_only) == ("ci", "tenant-a", True)
    assert authenticate(scope(store), secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert authenticate(scope(store), "jobd_nope_nope") is None
    assert authenticate(scope(store), "") is None

    listed = jobd(store_url, tmp_path, "token", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [entry] = json.loads(listed.stdout)
    assert entry["name"] == "ci" and entry["group"] == "tenant-a" and entry["read_only"] is True
    assert secret not in listed.stdout
    table = jobd(store_url, tmp_path, "token", "list")
    assert "ci" in table.stdout and "tenant-a" in table.stdout

    again = jobd(store_url, tmp_path, "token", "create", "ci")
    assert again.returncode == 2 and "token 'ci' already exists" in again.stderr

    revoked = jobd(store_url, tmp_path, "token", "revoke", "ci")
    assert revoked.returncode == 0, revoked.stderr
    assert authenticate(scope(store), secret) is None
    missing = jobd(store_url, tmp_path, "token", "revoke", "ci")
    assert missing.returncode == 2 and "unknown token 'ci'" in missing.stderr
    actions = [(e["action"], e["target"]) for e in store.audit_events(10)]
    assert actions == [("token.revoke", "ci"), ("token.create", "ci")]
    assert secret not in json.dumps([e["detail"] for e in store.audit_events(10)])


def test_an_expired_token_is_refused(store_url: str, store: Any) -> None:
    from jobd.ops.tokens import create_token

    made = create_token(scope(store), "tester", "short", expires_in=0.05)
    wait_for(lambda: authenticate(scope(store), made.secret) is None)
    listed = jobd_list(store)
    assert listed[0].expired


def jobd_list(store: Any) -> list[Any]:
    from jobd.ops.tokens import list_tokens

    return list_tokens(scope(store))


def test_token_create_rejects_a_bad_expiry(store_url: str, tmp_path: Path) -> None:
    result = jobd(store_url, tmp_path, "token", "create", "x", "--expires", "soon")
    assert result.returncode == 2 and result.stderr.startswith("jobd: --expires: ")
    assert "Traceback" not in result.stderr


def test_a_version_2_store_gains_the_tokens_table(store_url: str) -> None:
    from jobd.store.migrations import SCHEMA_VERSION
    from tests.conftest import open_store

    store = open_store(store_url)
    store.db.execute_sql("DROP TABLE api_tokens")
    store.m.Schema.update(version=2).execute()
    store.close()
    store = open_store(store_url)
    try:
        assert store.m.Schema.get().version == SCHEMA_VERSION
        assert store.db.table_exists("api_tokens")
    finally:
        store.close()


def test_token_subcommands_take_store_after_their_name(store_url: str, tmp_path: Path) -> None:
    from tests.clihelp import empty_config
    from tests.conftest import open_store, run_jobd

    open_store(store_url).close()  # a token is made for a store that exists
    env = {"JOBD_CONFIG": empty_config(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data")}
    made = run_jobd("token", "create", "late", "--store", store_url, env=env)
    assert made.returncode == 0, made.stderr
    listed = run_jobd("token", "list", "--json", "--store", store_url, env=env)
    assert [t["name"] for t in json.loads(listed.stdout)] == ["late"]
