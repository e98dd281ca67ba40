"""Migrations are safe for a rolling deploy: while they run, the previous release still serves.

django-migration-linter reads the SQL of every migration (shared.testing.lint_migrations); a
backward-incompatible one fails here unless marked as the contract step of an expand/contract
change (docs/releasing.md).
"""

import shutil
import uuid
from pathlib import Path

import follows.migrations
import pytest

from shared.testing import lint_migrations


@pytest.mark.django_db
def test_migrations_are_safe_for_a_rolling_deploy():
    assert not lint_migrations().has_errors


def _follows_migrations_with(tmp_path, monkeypatch, settings, extra: str) -> None:
    """follows' real migrations plus `extra` as 0002, loaded in their place through MIGRATION_MODULES."""
    name = f"candidate_migrations_{uuid.uuid4().hex}"  # a fresh module: imports are cached per name
    package = tmp_path / name
    shutil.copytree(Path(follows.migrations.__file__).parent, package, ignore=shutil.ignore_patterns("__pycache__", "0002_*"))
    (package / "0002_candidate.py").write_text(extra)
    monkeypatch.syspath_prepend(str(tmp_path))
    settings.MIGRATION_MODULES = {"follows": name}


DROP_COLUMN = """
from django.db import migrations

class Migration(migrations.Migration):
    dependencies = [("follows", "0001_initial")]
    {marker}
    operations = [migrations.RemoveField(model_name="follow", name="created_at")]
"""


@pytest.mark.django_db
def test_a_dropped_column_fails_the_check(tmp_path, monkeypatch, settings):
    _follows_migrations_with(tmp_path, monkeypatch, settings, DROP_COLUMN.format(marker=""))
    assert lint_migrations(include_apps=["follows"]).has_errors


@pytest.mark.django_db
def test_a_dropped_column_marked_as_the_contract_step_passes(tmp_path, monkeypatch, settings):
    _follows_migrations_with(
        tmp_path,
        monkeypatch,
        settings,
        DROP_COLUMN.format(marker='reviewed_for_rolling_deploy = "contract step: created_at unread since the release before"'),
    )
    assert not lint_migrations(include_apps=["follows"]).has_errors
