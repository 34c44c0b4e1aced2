"""One delivery's attempt, as a function the dispatcher calls (again on a retry).

Each reads its channel's secret from the environment at the attempt, so a
secret set after a failure is used by the retry, and is never kept beside the
queued message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from jobd.core.masking import Masker
from jobd.core.model import NotifyChannel, Run
from jobd.observe import messages
from jobd.observe.transport import DeliveryFailed, post, send_mail

PING_TIMEOUT = 10.0


def secret(environ: Mapping[str, str], variable: str | None) -> str | None:
    if variable is None:
        return None
    value = environ.get(variable)
    if not value:
        raise DeliveryFailed(f"environment variable {variable} is not set", permanent=True)
    return value


def ping(url: str, phase: str, tail: str) -> Callable[[], None]:
    """A healthchecks.io check-in: URL/start, URL, or URL/fail with the tail."""
    target = messages.ping_target(url, phase)
    body = tail.encode()

    def send() -> None:
        post(target, body, {"Content-Type": "text/plain; charset=utf-8"}, PING_TIMEOUT)

    return send


def webhook(
    channel: NotifyChannel,
    run: Run,
    event: str,
    host: str,
    tail: str,
    mask: Callable[[str], str],
    environ: Mapping[str, str],
) -> Callable[[], None]:
    def send() -> None:
        key = secret(environ, channel.secret_env)
        masked = Masker([key] if key else [])
        text = messages.webhook_body(run, event, host, tail, datetime.now(UTC)).decode()
        # Masked as JSON text: the masker knows each secret's JSON-escaped form.
        body = masked(mask(text)).encode()
        headers = {"Content-Type": "application/json", "User-Agent": "jobd"}
        if key:
            headers[channel.signature_header] = messages.signature(body, key)
        post(channel.url, body, headers, channel.timeout)

    return send


def mail(
    channel: NotifyChannel,
    run: Run,
    event: str,
    host: str,
    tail: str,
    environ: Mapping[str, str],
) -> Callable[[], None]:
    def send() -> None:
        password = secret(environ, channel.password_env)
        masked = Masker([password] if password else [])
        message = messages.email_message(
            run, event, host, masked(tail), channel.sender, channel.recipients
        )
        send_mail(
            message,
            channel.host,
            channel.port,
            channel.starttls,
            channel.username,
            password,
            channel.timeout,
        )

    return send
