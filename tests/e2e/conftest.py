"""Fixtures shared by the e2e modules: the pyz built once per session."""

from __future__ import annotations

import pytest

from tests.helpers.pyz import Built, build_pyz


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """dist/zerospeech-api.pyz as build.sh makes it, from a snapshot of the sources."""
    return build_pyz(tmp_path_factory.mktemp("sources"))
