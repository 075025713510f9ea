"""What the logs show of a failure: where it happened, never the values the code held there."""

from __future__ import annotations

import pytest
import structlog

from services.platform.logs import configure

SECRET = "s3cr3t-envelope-bytes-and-sql-parameters"


def _fails_holding(envelope: str) -> None:
    parameters = {"envelope": envelope}
    raise ValueError(f"could not store {len(parameters)} parameter")


@pytest.mark.parametrize("json", [False, True], ids=["console", "json"])
def test_a_logged_traceback_names_the_frames_but_no_local_variable(
    json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = structlog.get_config()
    try:
        configure("info", json=json)
        log = structlog.get_logger("test")
        try:
            _fails_holding(SECRET)
        except ValueError:
            log.exception("unexpected failure on a record")
    finally:
        structlog.configure(**saved)
    written = capsys.readouterr().err
    assert "unexpected failure on a record" in written
    assert "_fails_holding" in written and "could not store 1 parameter" in written  # the traceback is there
    assert SECRET not in written
