"""Every document in examples/ (and its sub-folders: multizone/) is a valid resource, as
`meshlog apply` would check it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from events import decode_resource

EXAMPLES_DIR = Path(__file__).parents[2] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.rglob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(EXAMPLES_DIR)))
def test_example_documents_are_valid(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for doc in docs:
        decode_resource(doc)  # raises InvalidResource with every violation
