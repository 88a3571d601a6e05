"""A failed step (issue 15): a named problem is one line on the terminal, its traceback in the step's log."""

import pytest

from interpflow.steps import logged


def test_an_anticipated_error_is_one_line_and_its_traceback_is_in_the_log(tmp_path, capsys):
    log = tmp_path / "logs/step.log"
    with pytest.raises(SystemExit) as info, logged(log):
        raise ValueError("corpora.wiki.path: corpus file x.txt holds no documents")
    assert str(info.value) == (
        f"ValueError: corpora.wiki.path: corpus file x.txt holds no documents\n(traceback in {log})"
    )
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "holds no documents" in text
    assert "step took" in text and "Traceback" not in capsys.readouterr().err


def test_a_bug_keeps_its_exception(tmp_path):
    with pytest.raises(TypeError, match="unsupported operand"), logged(tmp_path / "step.log"):
        1 + "a"  # noqa: B018
    assert "Traceback" in (tmp_path / "step.log").read_text()


def test_the_log_level_is_the_users(tmp_path, monkeypatch):
    import logging

    from interpflow.llm.backend import _litellm

    monkeypatch.setenv("INTERPFLOW_LOG_LEVEL", "debug")
    with logged(tmp_path / "step.log"):
        assert logging.getLogger().level == logging.DEBUG
        _litellm()  # at DEBUG the LLM library's own lines go to the step's log too
        assert logging.getLogger("LiteLLM").level == logging.DEBUG
        logging.getLogger("interpflow.x").debug("a debug line")
    assert "a debug line" in (tmp_path / "step.log").read_text()
    monkeypatch.setenv("INTERPFLOW_LOG_LEVEL", "INFO")
    with logged(tmp_path / "step.log"):
        _litellm()  # at INFO its two lines per request stay out
        assert logging.getLogger("LiteLLM").level == logging.WARNING
        logging.getLogger("interpflow.x").debug("another debug line")
    assert "another debug line" not in (tmp_path / "step.log").read_text()
    monkeypatch.setenv("INTERPFLOW_LOG_LEVEL", "loud")
    with pytest.raises(SystemExit, match="INTERPFLOW_LOG_LEVEL='LOUD' is not a log level"):
        with logged(tmp_path / "step.log"):
            pass
