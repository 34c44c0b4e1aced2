"""The systemd and launchd files in contrib/: valid, hardened, and in step with the defaults.

This machine has no systemd as PID 1 and no launchd, so the files are checked
offline: `systemd-analyze verify` and `security --offline`, sysusers/tmpfiles
applied to a scratch root, and plistlib for the property lists.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobd.core import model
from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "contrib" / "systemd"
LAUNCHD = ROOT / "contrib" / "launchd"
UNITS = ["jobd.service", "jobd-user.service"]
MAX_EXPOSURE = 2.0


def require(tool: str) -> str:
    """The tool's path; skipped where it is missing, except in CI where that is a failure."""
    path = shutil.which(tool)
    if path is None:
        if IN_CI:
            pytest.fail(f"{tool} is missing in CI (.ci/run installs it)")
        pytest.skip(f"{tool} is not installed")
    return path


def directives(unit: Path) -> dict[str, list[str]]:
    """`Section.Key` → values in order; systemd allows a key more than once."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.setdefault(f"{section}.{key}", []).append(value)
    return found


def runnable_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart's binary swapped for one that exists on this machine.

    verify fails on an ExecStart that is not an executable file, and /usr/bin/jobd
    (or ~/.local/bin/jobd) is not installed here; the venv's jobd script stands in.
    Everything after the binary, and every other line, is left as shipped.
    """
    stand_in = Path(sys.executable).parent / "jobd"
    if not os.access(stand_in, os.X_OK):
        stand_in = Path(sys.executable)
    text = (SYSTEMD / unit).read_text()
    new, count = re.subn(r"^ExecStart=\S+", f"ExecStart={stand_in}", text, flags=re.M)
    assert count == 1
    copy = tmp_path / unit
    copy.write_text(new)
    return copy


@pytest.mark.parametrize("unit", UNITS)
def test_unit_passes_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    tool = require("systemd-analyze")
    copy = runnable_copy(unit, tmp_path)
    # --man=no: verify would run `man` for each Documentation= page, and the
    # pages are in ./man, not installed. A user manager needs a runtime dir.
    mode = ["--user"] if unit == "jobd-user.service" else []
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    result = subprocess.run(
        [tool, *mode, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        timeout=60,
    )
    # verify exits 0 on unknown keys and bad values ("ignoring"), so any output fails.
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_system_unit_exposure_is_at_most_2(tmp_path: Path) -> None:
    tool = require("systemd-analyze")
    copy = runnable_copy("jobd.service", tmp_path)
    result = subprocess.run(
        [tool, "security", "--offline=true", f"--threshold={int(MAX_EXPOSURE * 10)}", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for jobd\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def test_system_unit_settings() -> None:
    unit = directives(SYSTEMD / "jobd.service")
    expected = {
        "Service.Type": "notify",
        "Service.NotifyAccess": "main",
        "Service.WatchdogSec": "60",
        "Service.ExecStart": "/usr/bin/jobd run --config /etc/jobd/jobd.toml",
        "Service.ExecReload": "/bin/kill -HUP $MAINPID",
        "Service.KillMode": "mixed",
        "Service.Restart": "on-failure",
        "Service.User": "jobd",
        "Service.Group": "jobd",
        "Service.StateDirectory": "jobd",
        "Service.ConfigurationDirectory": "jobd",
        "Service.UMask": "0027",
        "Service.Environment": "JOBD_STORE=sqlite:////var/lib/jobd/jobd.db",
        "Service.PrivateUsers": "yes",
        "Service.ProtectSystem": "strict",
        "Service.CapabilityBoundingSet": "",
        "Unit.Wants": "network-online.target",
        "Install.WantedBy": "multi-user.target",
    }
    for key, value in expected.items():
        assert unit.get(key) == [value], key
    assert set(unit["Unit.After"][0].split()) == {"network-online.target", "time-sync.target"}


@pytest.mark.parametrize("unit", UNITS)
def test_stop_timeout_outlasts_the_default_shutdown(unit: str) -> None:
    """systemd must not SIGKILL jobd while it is still recording how its jobs ended."""
    stop = float(directives(SYSTEMD / unit)["Service.TimeoutStopSec"][0])
    assert stop > model.DEFAULT_SHUTDOWN_GRACE + model.DEFAULT_KILL_GRACE


def test_user_unit_has_no_user_and_is_notify() -> None:
    unit = directives(SYSTEMD / "jobd-user.service")
    assert unit["Service.Type"] == ["notify"]
    assert "Service.User" not in unit and "Service.Group" not in unit
    assert unit["Install.WantedBy"] == ["default.target"]


def test_sysusers_and_tmpfiles_apply_to_a_scratch_root(tmp_path: Path) -> None:
    sysusers = require("systemd-sysusers")
    tmpfiles = require("systemd-tmpfiles")
    if os.geteuid() != 0:
        pytest.skip("creating files owned by jobd needs root")
    root = tmp_path / "root"
    for kind, source in (("sysusers.d", "jobd.sysusers"), ("tmpfiles.d", "jobd.tmpfiles")):
        (root / "usr/lib" / kind).mkdir(parents=True)
        shutil.copy(SYSTEMD / source, root / "usr/lib" / kind / "jobd.conf")
    (root / "etc/jobd").mkdir(parents=True)
    config = root / "etc/jobd/jobd.toml"
    config.write_text("[jobd]\n")
    config.chmod(0o666)

    for tool in (sysusers, tmpfiles):
        args = [tool, f"--root={root}", "jobd.conf"]
        if tool == tmpfiles:
            args.insert(1, "--create")
        result = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr

    entry = next(line.split(":") for line in (root / "etc/passwd").read_text().splitlines() if line)
    assert entry[0] == "jobd" and entry[5] == "/var/lib/jobd" and entry[6].endswith("nologin")
    uid, gid = int(entry[2]), int(entry[3])
    state = (root / "var/lib/jobd").stat()
    assert (state.st_uid, state.st_gid, state.st_mode & 0o7777) == (uid, gid, 0o750)
    info = config.stat()
    # Owned by root and not writable by others: what jobd as root insists on.
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, gid, 0o640)


LAUNCHD_FILES = {
    "org.jobd.jobd.plist": "org.jobd.jobd",
    "org.jobd.agent.plist": "org.jobd.agent",
}


@pytest.mark.parametrize(("name", "label"), LAUNCHD_FILES.items())
def test_launchd_plist(name: str, label: str) -> None:
    with open(LAUNCHD / name, "rb") as handle:
        plist = plistlib.load(handle)
    assert plist["Label"] == label
    args = plist["ProgramArguments"]
    assert Path(args[0]).is_absolute() and Path(args[0]).name == "jobd"
    assert args[1] == "run" and "--detach" not in args
    assert plist["RunAtLoad"] is True
    # Restart after a crash, not after a clean stop (as Restart=on-failure).
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ExitTimeOut"] == 45
    assert plist["ExitTimeOut"] > model.DEFAULT_SHUTDOWN_GRACE + model.DEFAULT_KILL_GRACE
    for key in ("StandardOutPath", "StandardErrorPath", "WorkingDirectory"):
        # launchd expands neither ~ nor $HOME: the path must be absolute.
        assert plist[key].startswith("/"), key
    assert "/usr/bin" in plist["EnvironmentVariables"]["PATH"]


def test_launch_daemon_runs_as_its_own_user() -> None:
    with open(LAUNCHD / "org.jobd.jobd.plist", "rb") as handle:
        plist = plistlib.load(handle)
    assert plist["UserName"] == "_jobd" and plist["GroupName"] == "_jobd"
    assert plist["ProgramArguments"][2:] == ["--config", "/usr/local/etc/jobd/jobd.toml"]
    assert plist["EnvironmentVariables"]["JOBD_STORE"] == "sqlite:////usr/local/var/jobd/jobd.db"


def test_launch_agent_runs_as_the_logged_in_user() -> None:
    with open(LAUNCHD / "org.jobd.agent.plist", "rb") as handle:
        plist = plistlib.load(handle)
    assert "UserName" not in plist and "GroupName" not in plist
    # No JOBD_STORE: the agent shares the default store with `jobd` in a terminal.
    assert "JOBD_STORE" not in plist["EnvironmentVariables"]
