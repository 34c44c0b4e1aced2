"""The network side of notifications: one HTTP POST, one SMTP conversation.

Each call makes one attempt and raises DeliveryFailed with a short reason that
names neither the URL (a check-in URL is as good as a password) nor a secret;
retrying is the dispatcher's business.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage

ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


class DeliveryFailed(Exception):
    """One attempt failed; `permanent` when trying again cannot help."""

    def __init__(self, reason: str, permanent: bool = False) -> None:
        super().__init__(reason)
        self.permanent = permanent


def post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> None:
    """POST `body`; any 2xx answer is a delivery."""
    import urllib3

    pool = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(total=timeout))
    try:
        response = pool.request("POST", url, body=body, headers=dict(headers), redirect=False)
    except urllib3.exceptions.HTTPError as exc:
        raise DeliveryFailed(_reason(exc)) from None
    finally:
        pool.clear()
    if not 200 <= response.status < 300:
        raise DeliveryFailed(f"HTTP {response.status}")


def send_mail(
    message: EmailMessage,
    host: str,
    port: int,
    starttls: bool,
    username: str | None,
    password: str | None,
    timeout: float,
) -> None:
    """Send over SMTP, upgraded with STARTTLS (the certificate is verified)."""
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as smtp:
            smtp.ehlo()
            if starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if username:
                smtp.login(username, password or "")
            smtp.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryFailed(f"SMTP login refused ({exc.smtp_code})", permanent=True) from None
    except smtplib.SMTPNotSupportedError:
        raise DeliveryFailed("the SMTP server does not offer STARTTLS", permanent=True) from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryFailed(f"SMTP {exc.smtp_code}: {_text(exc.smtp_error)}") from None
    except smtplib.SMTPRecipientsRefused:
        raise DeliveryFailed("SMTP server refused every recipient", permanent=True) from None
    except ssl.SSLError as exc:
        raise DeliveryFailed(f"TLS: {exc.reason or exc}") from None
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryFailed(_reason(exc)) from None


def _text(value: bytes | str) -> str:
    text = value.decode(errors="replace") if isinstance(value, bytes) else value
    return " ".join(text.split())[:200]


def _reason(exc: BaseException) -> str:
    """A short cause without the URL: urllib3 puts the path in its messages."""
    import urllib3

    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    # Before the timeout check: urllib3's NewConnectionError is a ConnectTimeoutError.
    found = ERRNO_TEXT.search(str(exc))
    if found:
        return found.group(1).strip().rstrip(".").lower()
    if isinstance(exc, TimeoutError | urllib3.exceptions.TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__
