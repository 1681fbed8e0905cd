"""`python -m apps.api.keys`, as the docs have it: runs the command `crew-keys`
(apps.cli.keys), as if it were run with -m."""

import runpy

runpy.run_module("apps.cli.keys", run_name="__main__", alter_sys=True)
