"""`crew`, the operator's command over HTTP (`commands`), built on `crew_client`."""

from apps.cli.crew.commands import main

__all__ = ["main"]
