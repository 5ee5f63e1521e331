"""Process titles through setproctitle, read back from /proc/<pid>/cmdline."""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest
from conftest import APPS, START_METHODS, app_script, python, wait_until

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/cmdline"),
]


def _title(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()


def _titled(pid: int, title: str) -> bool:
    return wait_until(lambda: _title(pid) == title, 10)


@pytest.mark.parametrize("method", START_METHODS)
def test_manager_workers_and_custom_processes_have_titles(launch, method):
    pytest.importorskip("setproctitle")
    served = launch(
        *python(app_script("probed.py")),
        env={"RT_WORKERS": "2", "RT_CUSTOM": "1", "RT_START_METHOD": method},
    )
    served.ready()
    side = int(served.wait_for(r"side running (\d+)").group(1))
    assert _titled(served.pid, "runtime: manager [probed]"), _title(served.pid)
    started = re.findall(r"Started (Runtime-Server-\S+) \(pid (\d+)\)", served.output)
    assert len(started) == 2
    for name, pid in started:
        assert _titled(int(pid), f"runtime: {name}"), _title(int(pid))
    assert _titled(side, "runtime: Runtime-Side-0"), _title(side)
    served.signal(signal.SIGHUP)  # the new workers have names of their own
    new = int(served.wait_for(r" as Runtime-Server-0-1 \(pid (\d+)\)").group(1))
    assert _titled(new, "runtime: Runtime-Server-0-1"), _title(new)
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_single_process_title(launch):
    pytest.importorskip("setproctitle")
    served = launch(*python(app_script("probed.py")), env={"RT_SINGLE": "1"})
    served.wait_for(r"INFO Serving$")  # its signal handlers are in place
    assert _titled(served.pid, "runtime: single process [probed]")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_without_setproctitle_titles_stay_as_they_are(launch, tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "setproctitle.py").write_text("raise ImportError('not installed')\n")
    served = launch(
        *python(app_script("probed.py")),
        env={
            "PYTHONPATH": os.pathsep.join([str(hidden), str(APPS)]),
            "RT_START_METHOD": "spawn",
        },
    )
    served.ready()
    assert "runtime:" not in _title(served.pid)
    for pid in served.worker_pids():
        assert not _title(pid).startswith("runtime:")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert "Traceback" not in served.output
