"""avemo.log: FOLDER/log.txt of a command (header, whole lines, footer) and progress bars only on a terminal."""

import io
import sys

import pytest

from avemo.log import logged, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_hidden_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = progress(range(3), desc="work")
    assert bar.disable and list(bar) == [0, 1, 2]
    bar.close()
    assert sys.stderr.getvalue() == ""


def test_progress_is_drawn_on_a_terminal_but_never_into_the_log(monkeypatch, tmp_path):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with logged(tmp_path, "work"):
        bar = progress(range(3), desc="work")
        assert not bar.disable
        list(bar)
        bar.close()
        print("done")
    assert "work: 100%" in terminal.getvalue()
    text = (tmp_path / "log.txt").read_text()
    assert "done" in text and "100%" not in text


def test_progress_is_hidden_on_other_ranks(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    monkeypatch.setenv("RANK", "1")
    assert progress(range(3)).disable


def test_log_has_header_settings_whole_lines_and_footer(tmp_path, capsys):
    folder = tmp_path / "made-later"
    with logged(folder, "extract", {"weights": "none", "decode": {"hist_bins": 32}}):
        print("before the folder exists")
        folder.mkdir()
        print("bar 10%\rbar 50%\rbar 100%")  # a carriage-return update: its last state is kept
        sys.stderr.write("warning: something\n")
        print("no newline at the end", end="")
    text = (folder / "log.txt").read_text()
    assert "avemo 0.1.0: extract" in text and "   weights: none\n" in text and "   decode.hist_bins: 32\n" in text
    for line in ("before the folder exists", "bar 100%", "warning: something", "no newline at the end"):
        assert line in text
    assert "\r" not in text and "bar 10%" not in text
    assert text.splitlines()[-1].startswith("== finished after ")
    assert "bar 10%\rbar 50%" in capsys.readouterr().out  # the terminal sees what was printed, unchanged


def test_a_failing_command_logs_its_error_and_runs_append(tmp_path):
    with logged(tmp_path, "first"):
        print("one")
    with pytest.raises(ValueError), logged(tmp_path, "second"):
        raise ValueError("the reason")
    text = (tmp_path / "log.txt").read_text()
    assert text.index(": first") < text.index("one") < text.index(": second")
    assert "Error: the reason" in text and text.splitlines()[-1].startswith("== failed after ")


def test_an_interrupted_command_says_so(tmp_path):
    with pytest.raises(KeyboardInterrupt), logged(tmp_path, "work"):
        raise KeyboardInterrupt
    assert (tmp_path / "log.txt").read_text().splitlines()[-1].startswith("== interrupted after ")


def test_no_log_on_other_ranks(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "2")
    with logged(tmp_path, "work"):
        print("rank 2")
    assert not (tmp_path / "log.txt").exists()


def test_the_log_is_never_written_through_a_link(tmp_path, capsys):
    target = tmp_path / "other.txt"
    target.write_text("keep me\n")
    (tmp_path / "log.txt").symlink_to(target)
    with logged(tmp_path, "work"):
        print("work done")
    assert target.read_text() == "keep me\n"
    assert "cannot write" in capsys.readouterr().err
