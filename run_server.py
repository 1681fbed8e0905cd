"""`python3 run_server.py`, the Operator Console document's command: what `make op-console` does.

It migrates the database, then serves the API on conf/operator.yaml's host and port (127.0.0.1:8008
unless HOST and PORT say otherwise), from the checkout's directory wherever it is started.
"""

import os
from pathlib import Path

from alembic.config import main as alembic

from apps.cli.api import main as serve

if __name__ == "__main__":
    os.chdir(Path(__file__).resolve().parent)
    alembic(["upgrade", "head"])
    serve(["--op-console"])
