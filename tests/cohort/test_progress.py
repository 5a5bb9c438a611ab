import io
import re

from cohort.progress import StepProgress, fmt_seconds, track


def test_non_terminal_progress_prints_lines_with_rate_and_time_left():
    buf = io.StringIO()  # not a terminal
    with StepProgress("autoencoder", total=10, interval_s=0.0, stream=buf) as bar:
        for step in range(1, 11):
            bar.update(step, info=f"loss {1 / step:.3f}")
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("[autoencoder] 0/10") and lines[0].endswith("started")
    mid = [ln for ln in lines if ln.startswith("[autoencoder] 5/10")]
    assert mid and "loss 0.200" in mid[0] and re.search(r"\d+\.\d\d s/step", mid[0]) and "left" in mid[0]
    assert lines[-1].startswith("[autoencoder] 10/10 (100%)") and lines[-1].endswith("finished")


def test_interval_limits_lines():
    buf = io.StringIO()
    with StepProgress("x", total=1000, interval_s=3600, stream=buf) as bar:
        for i in range(1000):
            bar.update(i + 1)
    assert len(buf.getvalue().splitlines()) == 2  # start and end only


def test_disabled_prints_nothing_and_resumed_count():
    buf = io.StringIO()
    with StepProgress("x", total=5, enabled=False, stream=buf) as bar:
        bar.update(5)
    assert buf.getvalue() == ""
    with StepProgress("y", total=5, completed=3, interval_s=0, stream=buf) as bar:
        bar.update(4)
    assert "[y] 3/5" in buf.getvalue() and "[y] 4/5" in buf.getvalue()


def test_track_yields_everything(capsys):
    assert list(track(range(4), "cases")) == [0, 1, 2, 3]


def test_fmt_seconds():
    assert (fmt_seconds(5), fmt_seconds(65), fmt_seconds(3700)) == ("5s", "1m05s", "1h01m")
