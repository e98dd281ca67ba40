"""Migrations are safe for a rolling deploy (shared.testing.lint_migrations, docs/releasing.md);
the users suite shows the check failing on a dropped column."""

import pytest

from shared.testing import lint_migrations


@pytest.mark.django_db
def test_migrations_are_safe_for_a_rolling_deploy():
    assert not lint_migrations().has_errors
