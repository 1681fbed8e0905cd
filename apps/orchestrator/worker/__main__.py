"""`python -m apps.orchestrator.worker`, as the docs have it: runs the command `crew-worker`
(apps.cli.worker), as if it were run with -m."""

import runpy

runpy.run_module("apps.cli.worker", run_name="__main__", alter_sys=True)
