"""The OpenAPI document: the one in the repository is the one served, it names
every route the server has and no other, and schemathesis fuzzes every
operation against a live server on both backends with no server error and no
response outside the document."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.apihelp import Api, api, go_file
from tests.clihelp import postgresql_url

__all__ = ["api", "postgresql_url"]  # fixtures

DOCUMENT = Path(__file__).resolve().parent.parent / "jobd" / "api" / "openapi.json"


def routes() -> set[tuple[str, str]]:
    from jobd.api.views import Views

    found = set()
    for name in dir(Views):
        spec = getattr(getattr(Views, name), "route", None)
        if spec is not None:
            method, path = spec[0], spec[1].replace(":int}", "}")
            found.add((method.lower(), path))
    return found


def test_every_route_is_documented_and_every_documented_operation_exists() -> None:
    document = json.loads(DOCUMENT.read_text())
    assert document["openapi"].startswith("3.1")
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == routes()


def test_the_served_document_is_the_repository_document(api: Api) -> None:
    served = api.call("GET", "/v1/openapi.json")
    assert served.status == 200
    assert served.json() == json.loads(DOCUMENT.read_text())


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_and_no_undocumented_response(
    api: Api, tmp_path: Path
) -> None:
    for job in ("held", "scan_a"):
        go_file(api.tmp_path, job).touch()  # every run ends at once: long polls return
    token = api.token("fuzz")
    checks = [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("st")),
            "run",
            f"{api.base}/v1/openapi.json",
            "-H",
            f"Authorization: Bearer {token}",
            "--checks",
            ",".join(checks),
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "15",
            "--workers",
            "1",
            "--seed",
            "20261207",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
