"""The ``fake_helix`` pytest fixture, registered through the ``pytest11`` entry point.

    def test_answer(fake_helix):
        client = HelixClient(fake_helix.url)
        ...

FakeHelix is imported only when a test asks for the fixture, so merely having helix-pipeline
installed adds nothing to other projects' test runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import FakeHelix

__all__ = ["fake_helix"]


@pytest.fixture
def fake_helix() -> Iterator[FakeHelix]:
    """A started :class:`~helix_pipeline.testing.FakeHelix` on 127.0.0.1, stopped afterwards."""
    from .testing import FakeHelix

    with FakeHelix() as helix:
        yield helix
