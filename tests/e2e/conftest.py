"""Fixtures of the browser tests: ``browser``, one chromium shared by every
module of the package and closed after its last test; each test's browser
contexts (its pages, cookies and storage) are closed after it."""

from collections.abc import Iterator

import pytest

from tests.e2e.webtools import browser_fixture  # noqa: F401  (the fixture)


@pytest.fixture(autouse=True)
def _close_browser_contexts(request: pytest.FixtureRequest) -> Iterator[None]:
    """Close the contexts a test opened: the shared browser would otherwise
    keep every test's renderer processes until the package ends."""
    yield
    if "browser" in request.fixturenames:
        for context in list(request.getfixturevalue("browser").contexts):
            context.close()
