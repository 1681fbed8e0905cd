"""Write the OpenAPI document the app serves to a file, for review beside the code.

python -m apps.cli.openapi docs/openapi.json      (make openapi)
"""

import sys
from pathlib import Path

from apps.api.app import create_app
from apps.api.openapi import document_text


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/openapi.json")
    target.write_text(document_text(create_app))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
