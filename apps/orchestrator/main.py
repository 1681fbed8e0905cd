"""`python -m apps.orchestrator.main`, as the docs have it: runs the command `crew-task`
(apps.cli.task), as if it were run with -m."""

import runpy

runpy.run_module("apps.cli.task", run_name="__main__", alter_sys=True)
