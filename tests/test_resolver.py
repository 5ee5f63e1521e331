"""The start-method resolver against a model, over any order of calls."""

from __future__ import annotations

import logging
import multiprocessing

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime import Runtime, start_methods
from runtime.errors import StartMethodConflictError, StartMethodError
from runtime.start_methods import StartMethodResolver

pytestmark = pytest.mark.timeout(120)

METHODS = multiprocessing.get_all_start_methods()
DEFAULT = METHODS[0]
NAMES = st.sampled_from([*METHODS, "forkserve", "", "SPAWN"])

operations = st.lists(
    st.one_of(
        st.tuples(st.just("global"), st.sampled_from(METHODS)),
        st.tuples(st.just("factory")),
        st.tuples(st.just("class"), NAMES),
        st.tuples(st.just("skip")),
        st.tuples(st.just("resolve")),
        st.tuples(st.just("during_run"), NAMES),
    ),
    max_size=12,
)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _reset() -> None:
    multiprocessing.set_start_method(None, force=True)
    start_methods._skip_setup = False
    start_methods._warned.clear()
    Runtime.start_method = "spawn"


@pytest.fixture(autouse=True)
def clean_global_state():
    _reset()
    yield
    _reset()


@settings(max_examples=150, deadline=None)
@given(operations)
def test_resolver_follows_the_model(ops):
    _reset()
    records = _Records()
    logger = logging.getLogger("runtime")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    try:
        _check(ops, records)
    finally:
        logger.removeHandler(records)
        _reset()


def _check(ops, records: _Records) -> None:
    fixed: str | None = None  # the model of Python's global start method
    requested, skip = "spawn", False
    warned: set[tuple[str, str]] = set()
    for op in ops:
        if op[0] == "global":
            if fixed is None:
                multiprocessing.set_start_method(op[1])
                fixed = op[1]
            else:
                with pytest.raises(RuntimeError):
                    multiprocessing.set_start_method(op[1])
        elif op[0] == "factory":
            multiprocessing.Lock()
            fixed = fixed or DEFAULT
        elif op[0] == "class":
            if op[1] in METHODS:
                Runtime.start_method = op[1]
                requested = op[1]
            else:
                with pytest.raises(StartMethodError, match="choose one of"):
                    Runtime.start_method = op[1]
        elif op[0] == "skip":
            start_methods.skip_start_method_setup()
            skip = True
        elif op[0] == "during_run":
            Runtime._active_runs += 1
            try:
                with pytest.raises(StartMethodConflictError, match="before run"):
                    Runtime.start_method = op[1]
            finally:
                Runtime._active_runs -= 1
        else:
            before = len(records.messages)
            context = StartMethodResolver(Runtime.start_method).resolve()
            new = records.messages[before:]
            if skip:
                fixed = fixed or DEFAULT
                assert context.get_start_method() == fixed
                assert new == []
            else:
                assert context.get_start_method() == requested
                if fixed is None:
                    fixed = requested
                elif fixed != requested and (requested, fixed) not in warned:
                    warned.add((requested, fixed))
                    assert len(new) == 1
                    assert repr(requested) in new[0] and repr(fixed) in new[0]
                    assert "rt.context" in new[0]
                    new = []
                assert new == []
        assert Runtime.start_method == requested
        assert multiprocessing.get_start_method(allow_none=True) == fixed


def test_unknown_method_error_names_the_available_ones():
    with pytest.raises(StartMethodError) as info:
        StartMethodResolver("forkserve")
    message = str(info.value)
    assert "'forkserve'" in message
    for method in METHODS:
        assert method in message


def test_instance_attribute_is_checked_too():
    rt = Runtime("resolver-instance")
    try:
        with pytest.raises(StartMethodError):
            rt.start_method = "nope"
        rt.start_method = "fork"
        assert rt._resolver().requested == "fork"
        assert Runtime.start_method == "spawn"
    finally:
        Runtime._registry.pop("resolver-instance")


def test_fork_context_lock_is_refused_for_spawn_by_name():
    lock = multiprocessing.get_context("fork").Lock()
    with pytest.raises(RuntimeError) as info:
        start_methods.check_transferable("spawn", {"shared_ctx.lock": lock})
    assert "shared_ctx.lock" in str(info.value)
    assert "Start method 'spawn' was requested" in str(info.value)
    start_methods.check_transferable("fork", {"shared_ctx.lock": lock})
    spawn_lock = multiprocessing.get_context("spawn").Lock()
    start_methods.check_transferable("spawn", {"shared_ctx.lock": spawn_lock})


def test_fork_warns_about_running_threads(caplog):
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="poller")
    thread.start()
    try:
        with caplog.at_level(logging.WARNING, logger="runtime"):
            start_methods.warn_if_threaded()
    finally:
        stop.set()
        thread.join()
    assert "'poller'" in caplog.text
