"""`python -m apps.api`, as the docs have it: runs the command `crew-api`
(apps.cli.api), as if it were run with -m."""

import runpy

runpy.run_module("apps.cli.api", run_name="__main__", alter_sys=True)
