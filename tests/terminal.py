"""A real terminal for tests of what people see: tmux, with a server of its own."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import uuid

import pytest

from tests.conftest import IN_CI


class Terminal:
    """A tmux session of its own (own server socket) running one command.

    COLUMNS and LINES are set wrong on purpose, as a resized window leaves
    them: the view must follow the terminal's real size."""

    def __init__(self, command: list[str], width: int, height: int) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            if IN_CI:
                pytest.fail("tmux is missing in CI (.ci/run installs it)")
            pytest.skip("tmux is not installed")
        self.base = [tmux, "-L", f"jobd-test-{uuid.uuid4().hex[:8]}"]
        shell = f"env TERM=xterm-256color COLUMNS=200 LINES=60 {shlex.join(command)}"
        shell += "; echo EXITED=$?; sleep 30"
        size = ["-x", str(width), "-y", str(height)]
        subprocess.run([*self.base, "new-session", "-d", "-s", "top", *size, shell], check=True)

    def screen(self) -> str:
        done = subprocess.run(
            [*self.base, "capture-pane", "-p", "-t", "top"], capture_output=True, text=True
        )
        return done.stdout + done.stderr

    def keys(self, *keys: str) -> None:
        subprocess.run([*self.base, "send-keys", "-t", "top", *keys], check=True)

    def exit_status(self) -> int | None:
        """The command's exit status, once it has ended (the pane then says it)."""
        found = re.search(r"EXITED=(\d+)", self.screen())
        return int(found.group(1)) if found else None

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True)
