"""`python -m apps.orchestrator.worker`, as the docs have it: the command is `crew-worker`
(apps.cli.worker)."""

from apps.cli.worker import main

main()
