"""The example files in contrib/examples/ parse, and do what their comments say."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from jobd.config import ENV_NAME, parse_config, schedule_env_names
from jobd.model import LeaderMode

EXAMPLES = Path(__file__).resolve().parent.parent / "contrib" / "examples"
MULTI_HOST = EXAMPLES / "multi-host.toml"
ENV_FILE = EXAMPLES / "jobd.env"


def read_env_file(path: Path) -> dict[str, str]:
    """The subset of systemd's EnvironmentFile= syntax the example uses: VAR="value"."""
    values = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, value = line.partition("=")
        assert ENV_NAME.match(name), line
        assert re.fullmatch(r'"[^"\\$`]*"', value), f"quote values, nothing to expand: {line}"
        values[name] = value[1:-1]
    return values


def test_multi_host_example_parses() -> None:
    config = parse_config(MULTI_HOST.read_text(), str(MULTI_HOST))
    settings = config.settings
    assert settings.store is not None and settings.store.startswith("postgresql://")
    assert ":" not in settings.store.split("//", 1)[1].split("@")[0], "no password in the file"
    assert settings.leader is LeaderMode.TABLE
    assert settings.lease_ttl == 20
    assert settings.shutdown_grace + settings.kill_grace < 45  # the units' stop timeout
    assert "drift_detection" in config.jobs


def test_env_file_overrides_apply_to_the_multi_host_example() -> None:
    environ = read_env_file(ENV_FILE)
    plain = parse_config(MULTI_HOST.read_text(), str(MULTI_HOST))
    config = parse_config(MULTI_HOST.read_text(), str(MULTI_HOST), environ)
    assert config.settings.store == environ["JOBD_STORE"]
    overridden = {k for k in environ if k.endswith("_SCHEDULE")}
    assert overridden, "the example shows schedule overrides"
    for name in overridden:
        # Every override names a job of the example, so trying it shows an effect.
        job = next(j for j in config.jobs if name in schedule_env_names(j))
        assert config.jobs[job].schedule == environ[name] != plain.jobs[job].schedule


def test_env_file_reads_the_same_in_a_shell() -> None:
    """The comment says `set -a; . ./jobd.env`; a shell must see what systemd sees."""
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    script = 'set -a; . "$1"; exec "$2" -c "$3"'
    result = subprocess.run(
        ["/bin/sh", "-c", script, "sh", ENV_FILE, sys.executable, dump],
        capture_output=True,
        text=True,
        timeout=30,
        env={},
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    for name, value in read_env_file(ENV_FILE).items():
        assert seen[name] == value


def test_every_contrib_path_the_docs_name_exists() -> None:
    """README.md, the man page and the service files point at contrib/; no dead links."""
    root = EXAMPLES.parent.parent
    docs = [root / "README.md", root / "man" / "jobd.toml.5", *root.glob("contrib/*/*")]
    named = set()
    for doc in docs:
        named |= set(re.findall(r"contrib/[\w./-]*\w", doc.read_text()))
    assert "contrib/systemd/jobd.service" in named
    missing = sorted(path for path in named if not (root / path).exists())
    assert not missing
