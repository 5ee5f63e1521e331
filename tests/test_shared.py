"""rt.shared_ctx with real processes on every start method."""

from __future__ import annotations

import signal

import pytest
from conftest import START_METHODS, app_script, python
from http_client import get

pytestmark = pytest.mark.timeout(90)


def _sharing(launch, **env):
    served = launch(*python(app_script("sharing.py")), env=env)
    return served, served.ready()


@pytest.mark.parametrize("method", START_METHODS)
def test_queue_value_lock_and_event_cross_workers(launch, method):
    served, url = _sharing(launch, RT_START_METHOD=method, RT_WORKERS="3")
    for i in range(6):
        assert get(url, f"/put?item=x{i}").text == "ok"
    got = sorted(get(url, "/get").text for _ in range(6))
    assert got == [f"x{i}" for i in range(6)]
    counts = [int(get(url, "/count").text) for _ in range(30)]
    assert counts == list(range(1, 31))  # one Value under one Lock, 3 workers
    assert get(url, "/event").text == "False"
    assert {get(url, "/event").text for _ in range(10)} == {"True"}
    served.signal(signal.SIGHUP)  # restarted workers get the same objects
    served.wait_for(r"Restarted Runtime-Server-2-0 .*\(zero-downtime\)")
    assert int(get(url, "/count").text) == 31
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_plain_objects_are_warned_about_once_each(launch):
    # C18
    served, url = _sharing(launch, RT_PLAIN="1")
    assert get(url, "/plain").json() == {"settings": {"a": 1}, "number": 7}
    assert served.count(r"rt.shared_ctx.settings \(dict\) is not shared") == 1
    assert served.count(r"rt.shared_ctx.number \(int\) is not shared") == 1
    assert served.count(r"shared_ctx.mixed \(tuple\): its item 1 \(int\) is not") == 1
    assert served.count("is not shared between processes") == 3
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_attaching_outside_main_process_start_is_refused(launch):
    served, url = _sharing(launch)
    served.wait_for(
        r"refused: rt.shared_ctx.later was set outside a main_process_start listener"
    )
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


def test_attaching_in_a_worker_fails_its_start(launch):
    served = launch(*python(app_script("sharing.py")), env={"RT_LATE": "1"})
    assert served.wait(30) == 1
    assert "rt.shared_ctx.late cannot be set in a worker process" in served.output


def test_single_process_shares_within_the_process(launch):
    served = launch(
        *python(app_script("sharing.py")), env={"RT_SINGLE": "1", "RT_WORKERS": "1"}
    )
    served.wait_for(r"\(single process\)")
    url = served.url
    served.wait_for("refused: ")
    assert get(url, "/put?item=a").text == "ok"
    assert get(url, "/get").text == "a"
    assert get(url, "/count").text == "1"
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
