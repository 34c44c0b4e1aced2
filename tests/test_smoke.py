"""End-to-end smoke checks of the installed command."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_jobd

EXAMPLE = Path(__file__).resolve().parent.parent / "contrib" / "examples" / "jobd.toml"


def test_validate_bundled_example() -> None:
    result = run_jobd("validate", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "heartbeat" in result.stdout
    assert "\x1b[" not in result.stdout


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "jobd.toml"
    bad.write_text('[jobs.a]\nschedul = "* * * * *"\ncommand = ["true"]\n')
    bad.chmod(0o644)  # as root, a group-writable config is refused whatever the umask
    result = run_jobd("validate", "--config", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "key 'schedul'" in result.stderr and "did you mean 'schedule'" in result.stderr
    assert "Traceback" not in result.stderr


def test_version() -> None:
    result = run_jobd("--version")
    assert result.returncode == 0 and "0.1.0" in result.stdout
