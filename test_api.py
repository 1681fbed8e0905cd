"""`python3 test_api.py`, the Operator Console document's command: what `make test-api` does,
the whole test suite (arguments go to pytest). It needs the dev dependencies:
`pip install -r requirements-dev.txt && pip install --no-deps -e .`."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        import pytest
    except ImportError:
        sys.exit("error: the tests need the dev dependencies: pip install -r requirements-dev.txt")
    os.chdir(Path(__file__).resolve().parent)
    sys.exit(pytest.main(sys.argv[1:]))
