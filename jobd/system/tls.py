"""The HTTPS certificate and key of `[api] tls_cert` / `tls_key`: checked, and
loaded into the server's TLS context.

Read only where the API is served (`jobd run` with `[api]`, `jobd serve`): other
commands parse the same config as users who may not be able to read the key.

The key is a secret, and is refused as libpq refuses a client key: a key owned by
this user must not be readable by its group or others (0600); one owned by root
may be readable by root's group (0640, a `ssl-cert` group). As root, both files
must also be root's and writable by no one else, as the config file must.
"""

from __future__ import annotations

import os
import ssl
import stat
from typing import NoReturn

from jobd.errors import ConfigError, first_line
from jobd.system.paths import refuse_unless_roots


def _refuse(config_file: str, key: str, path: str, message: str) -> NoReturn:
    raise ConfigError(f"{path}: {message}", file=config_file, key="api." + key)


def _check_file(config_file: str, key: str, path: str) -> os.stat_result:
    try:
        info = os.stat(path)
        with open(path, "rb"):
            pass
    except OSError as exc:
        _refuse(config_file, key, path, f"cannot read: {exc.strerror}")
    if not stat.S_ISREG(info.st_mode):
        _refuse(config_file, key, path, "not a file")
    if os.geteuid() == 0:
        try:
            refuse_unless_roots(path, info)
        except ConfigError as exc:
            _refuse(config_file, key, path, str(exc).split(": ", 1)[-1])
    return info


def _check_key_mode(config_file: str, path: str, info: os.stat_result) -> None:
    others = stat.S_IRWXO | (stat.S_IWGRP | stat.S_IXGRP if info.st_uid == 0 else stat.S_IRWXG)
    if info.st_mode & others:
        allowed = "0640" if info.st_uid == 0 else "0600"
        _refuse(
            config_file,
            "tls_key",
            path,
            f"refused: a private key readable by others (mode {stat.S_IMODE(info.st_mode):04o}; "
            f"at most {allowed})",
        )


def _no_passphrase() -> NoReturn:
    # Without this, OpenSSL would prompt on the terminal for the passphrase.
    raise ValueError("the key is encrypted; jobd needs it without a passphrase")


def _reason(exc: BaseException) -> str:
    text = first_line(exc)
    return text.split(" (_ssl.c")[0]


def server_context(cert: str, key: str, config_file: str) -> ssl.SSLContext:
    """A TLS server context with this pair, after the checks in the module's
    docstring. Raises ConfigError naming the config file, the key and the path."""
    _check_file(config_file, "tls_cert", cert)
    _check_key_mode(config_file, key, _check_file(config_file, "tls_key", key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # A context of its own parses the certificates alone, so that a failure
        # names the file at fault rather than "the pair".
        ssl.create_default_context(cafile=cert)
    except (ssl.SSLError, ValueError) as exc:
        _refuse(config_file, "tls_cert", cert, f"not a PEM certificate ({_reason(exc)})")
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except (ssl.SSLError, ValueError) as exc:
        _refuse(config_file, "tls_key", key, f"does not load with {cert} ({_reason(exc)})")
    return context
