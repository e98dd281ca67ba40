"""dev/testrun.py's arguments: a test path given after `--` narrows a suite to it."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))

import testrun  # noqa: E402


def test_a_path_inside_the_suite_replaces_its_target():
    assert testrun.narrowed(ROOT, ["tests"], ["tests/test_testrun.py"]) == []
    assert testrun.narrowed(ROOT, ["tests"], ["-x", "tests/test_testrun.py::test_options_keep_the_target"]) == []
    assert testrun.narrowed(ROOT, ["shared/tests"], ["shared/tests/test_gunicorn_worker.py"]) == []


def test_options_keep_the_target():
    assert testrun.narrowed(ROOT, ["tests"], ["-k", "follow"]) == ["tests"]
    assert testrun.narrowed(ROOT, ["tests"], []) == ["tests"]
    # a path outside the suite (another suite's tests) is not this suite's narrowing
    assert testrun.narrowed(ROOT, ["tests"], ["shared/tests/test_gunicorn_worker.py"]) == ["tests"]
    # a service's suite runs from its own directory with pytest.ini's testpaths: nothing to replace
    assert testrun.narrowed(ROOT / "services" / "users", [], ["tests/test_platform.py"]) == []
