"""Where the config and the default store live, and reading the config file."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from jobd.errors import ConfigError
from jobd.store.files import refuse_unless_roots

if TYPE_CHECKING:
    from jobd.core.model import Config

# platformdirs and the config parser are imported where used: reading history
# needs only the store URL (see jobd.ops.context), not a parsed config.

APP = "jobd"
SYSTEM_CONFIG = Path("/etc/jobd/jobd.toml")
# The path shown for the empty config used when no file is found.
NO_CONFIG_FILE = "(no config file)"


def config_candidates(explicit: str | None, environ: Mapping[str, str], cwd: Path) -> list[Path]:
    """The lookup order, first match wins (SPEC section 2)."""
    if explicit:
        return [Path(explicit)]
    if environ.get("JOBD_CONFIG"):
        return [Path(environ["JOBD_CONFIG"])]
    import platformdirs

    return [
        cwd / "jobd.toml",
        Path(platformdirs.user_config_dir(APP)) / "jobd.toml",
        SYSTEM_CONFIG,
    ]


def locate_config(explicit: str | None, environ: Mapping[str, str], cwd: Path) -> Path | None:
    candidates = config_candidates(explicit, environ, cwd)
    if explicit or environ.get("JOBD_CONFIG"):
        path = candidates[0]
        if not path.is_file():
            raise ConfigError("config file not found", file=str(path))
        return path
    return next((p for p in candidates if _visible_file(p)), None)


def _visible_file(path: Path) -> bool:
    """Whether a candidate is a file this user can see: a directory it may not
    enter (a cwd in root's home, under sudo -u) hides its config, as a missing
    one would, rather than failing the lookup with a traceback."""
    try:
        return path.is_file()
    except OSError:
        return False


def default_store_url() -> str:
    import platformdirs

    data_dir = Path(platformdirs.user_data_dir(APP))
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return f"sqlite:///{data_dir / 'jobd.db'}"


def check_config_ownership(path: Path) -> None:
    """As root, refuse a config not owned by root or writable by others, as cron does."""
    if os.geteuid() != 0:
        return
    refuse_unless_roots(path, path.stat())


def load_config(
    explicit: str | None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    store_override: str | None = None,
) -> Config:
    """Find, read and parse the config; no file at all gives an empty config.

    `store_override` is the `--store` URL, which the config is checked against
    exactly as against $JOBD_STORE.
    """
    from jobd.core.config.parse import parse_config

    env = os.environ if environ is None else environ
    path = locate_config(explicit, env, cwd or Path.cwd())
    if path is None:
        return parse_config("", NO_CONFIG_FILE, env, store_override)
    return parse_config(read_config(path), str(path), env, store_override)


def load_config_or_settings(
    explicit: str | None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    store_override: str | None = None,
) -> tuple[Config, ConfigError | None]:
    """The config, or, when the file is there but does not parse or validate,
    its `[jobd]` settings without jobs and the error that the full parse gave.

    For commands that need only the store (see jobd.core.config.parse.settings_only). A
    file that cannot be found, read or trusted (ownership) is still an error.
    """
    from jobd.core.config.parse import parse_config, settings_only

    env = os.environ if environ is None else environ
    path = locate_config(explicit, env, cwd or Path.cwd())
    if path is None:
        return parse_config("", NO_CONFIG_FILE, env, store_override), None
    text = read_config(path)
    try:
        return parse_config(text, str(path), env, store_override), None
    except ConfigError as exc:
        try:
            return settings_only(text, str(path), env, store_override), exc
        except ConfigError:
            raise exc from None  # the settings are broken too: report the first problem


def read_config(path: Path) -> str:
    """The text of a found config file, once its ownership is trusted."""
    check_config_ownership(path)
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from None


def store_override(explicit: str | None, environ: Mapping[str, str]) -> str | None:
    """The store URL from `--store` or $JOBD_STORE, checked, or None.

    Checked here too, not only when a config is parsed: reading history takes
    the URL without parsing the config, and a malformed URL must be refused in
    one line before any driver quotes it, password and all.
    """
    from jobd.core.urls import check_store_url

    if explicit:
        check_store_url(explicit, "--store", None)
        return explicit
    url = environ.get("JOBD_STORE")
    if url:
        check_store_url(url, "environment", "JOBD_STORE")
        return url
    return None


def store_url(config: Config, override: str | None = None) -> str:
    return override or config.settings.store or default_store_url()
