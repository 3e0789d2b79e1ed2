"""``make crds``: write the CRD and its reference page (``ridgeline.api.crd`` renders them and
writes nothing, so the API package stays pure).

Usage: ``python -m ridgeline.write_crd CRD.yaml [REFERENCE.md]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ridgeline.api.crd import render_crd_yaml, render_reference_markdown


def main(argv: list[str]) -> None:
    Path(argv[0]).write_text(render_crd_yaml())
    if len(argv) > 1:
        Path(argv[1]).write_text(render_reference_markdown())


if __name__ == "__main__":
    main(sys.argv[1:])
