"""jobd: a cron-style job scheduler whose every run is recorded in one store."""

from typing import Any

__version__ = "0.1.0"
__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    # `from jobd import Client` loads the client only when asked for: the CLI and
    # the daemon import this package first, and must stay light.
    if name == "Client":
        from jobd.client import Client

        return Client
    raise AttributeError(f"module 'jobd' has no attribute {name!r}")
