"""`crew`, the operator's command over HTTP (`app`), built on `crew_client`."""

# Each module adds its commands to `app` as it is imported: in the order `crew --help` lists them.
from apps.cli.crew import reading, running, gating, keys  # noqa: I001
from apps.cli.crew.app import main

__all__ = ["gating", "keys", "main", "reading", "running"]
