"""Test-wide settings: tests never read or write the user's real cache (~/.cache/minigen), and the conv
plan is the hand thresholds' (MINIGEN_PLAN=estimate), not timed: the same algorithms run on every run
(set here, before any test, so the processes tests start inherit it too)."""
import os

import pytest

os.environ["MINIGEN_PLAN"] = "estimate"


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Point $MINIGEN_DATA (datasets, the yardstick classifier) at a fresh folder for the session,
    so results never depend on what an earlier run left in the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MINIGEN_DATA", str(tmp_path_factory.mktemp("minigen-data")))
    yield
    mp.undo()
