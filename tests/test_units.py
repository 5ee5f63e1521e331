"""In-process checks of settings, listeners and option validation."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import Config, ProcessGroup, Runtime
from runtime.config import RunOptions
from runtime.errors import ConfigError
from runtime.listeners import Listeners

pytestmark = pytest.mark.timeout(60)


@given(st.one_of(st.integers(max_value=0), st.floats(), st.text(), st.booleans()))
def test_bad_worker_counts_are_refused_by_name(value):
    with pytest.raises(ConfigError) as info:
        RunOptions.build(Config(), ProcessGroup.THRESHOLD, workers=value)
    assert "workers" in str(info.value) and repr(value) in str(info.value)


@pytest.mark.parametrize(
    "key, value",
    [
        ("GRACEFUL_TIMEOUT", 0),
        ("GRACEFUL_TIMEOUT", "5"),
        ("ACK_TIMEOUT", -1),
        ("LOG_LEVEL", "loud"),
        ("ACCESS_LOG", "yes"),
        ("BACKLOG", 0),
    ],
)
def test_config_refuses_bad_values_when_set(key, value):
    config = Config()
    with pytest.raises(ConfigError) as info:
        setattr(config, key, value)
    assert repr(value) in str(info.value)


def test_config_refuses_unknown_keys():
    with pytest.raises(AttributeError):
        Config().GRACEFULL_TIMEOUT = 3  # type: ignore[attr-defined]


def test_threshold_and_ack_timeout():
    assert RunOptions.build(Config(), 300).ack_timeout == 30.0
    assert RunOptions.build(Config(), 600).ack_timeout == 60.0
    assert RunOptions.build(Config(ACK_TIMEOUT=2.5), 600).ack_timeout == 2.5
    with pytest.raises(ConfigError, match="THRESHOLD"):
        RunOptions.build(Config(), 0)


def test_run_refuses_bad_options_before_binding():
    rt = Runtime("units-bad-run", app=lambda scope, receive, send: None)
    try:
        with pytest.raises(ConfigError, match="workers"):
            rt.run(workers=0)
        with pytest.raises(ConfigError, match="got uds and fd"):
            rt.run(uds="/tmp/never.sock", fd=3)
        assert rt._manager is None
    finally:
        Runtime._registry.pop("units-bad-run")


def test_runtime_names_and_targets_are_checked():
    with pytest.raises(ConfigError, match="name"):
        Runtime("has space")
    with pytest.raises(ConfigError, match="only one of"):
        Runtime("units-two", app=print, protocol=print)
    with pytest.raises(ConfigError, match="callable"):
        Runtime("units-not-callable", app=42)
    Runtime("units-dup")
    try:
        with pytest.raises(ConfigError, match="already exists"):
            Runtime("units-dup")
    finally:
        Runtime._registry.pop("units-dup")


def test_stop_listeners_run_in_reverse_order():
    listeners, calls = Listeners(), []
    for event in ("main_process_start", "main_process_stop", "after_server_stop"):
        for i in range(3):
            listeners.add(event, lambda rt, e=event, i=i: calls.append((e, i)))

    async def run_all():
        for event in ("main_process_start", "main_process_stop", "after_server_stop"):
            await listeners.run(event, None)

    asyncio.run(run_all())
    assert calls == [
        ("main_process_start", 0),
        ("main_process_start", 1),
        ("main_process_start", 2),
        ("main_process_stop", 2),
        ("main_process_stop", 1),
        ("main_process_stop", 0),
        ("after_server_stop", 2),
        ("after_server_stop", 1),
        ("after_server_stop", 0),
    ]
    with pytest.raises(ConfigError, match="unknown listener event"):
        listeners.add("main_process_begin", print)
