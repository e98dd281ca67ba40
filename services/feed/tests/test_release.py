"""This build says what it is: version, commit, and the shared version it pins (docs/releasing.md)."""

import pytest

from shared.testing import assert_build_info


@pytest.mark.django_db
def test_version_commit_and_shared_pin(api_client):
    info = assert_build_info(api_client)
    assert info["service"] == "feed"
