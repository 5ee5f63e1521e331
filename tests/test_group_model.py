"""A hypothesis state machine drives restarts, scaling and kills of a real group
and checks, after each step settles, that reality matches the model."""

from __future__ import annotations

import os
import signal

import pytest
from conftest import Launched, app_script, python, session_members, wait_until
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_restarts import _m, wait_settled

pytestmark = pytest.mark.timeout(600)


class GroupMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        env = dict(os.environ)
        env.update(
            PYTHONPATH=str(app_script("").rstrip("/")),
            PYTHONUNBUFFERED="1",
            RT_START_METHOD="fork",
            RT_CRASH_LIMIT="50",
        )
        self.served = Launched(python(app_script("control.py")), env, os.getcwd())
        self.served.ready()
        self.size = 2
        self.kills = 0
        self.servers = wait_settled(self.served, self.size)

    @rule(zero_downtime=st.booleans(), every=st.booleans(), pick=st.integers(0, 9))
    def restart(self, zero_downtime, every, pick):
        query = {"zd": 1} if zero_downtime else {}
        if every:
            query["all"] = 1
        else:
            names = sorted(self.servers)
            query["names"] = names[pick % len(names)]
        assert _m(self.served, "/m/restart", **query).status_code == 200
        self._settle(changed=list(self.servers) if every else [query["names"]])

    @rule(workers=st.integers(1, 3))
    def scale(self, workers):
        response = _m(self.served, "/m/scale", n=workers)
        if workers == self.size:
            assert response.status_code == 400
            return
        assert response.status_code == 200
        self.size = workers
        self._settle()

    @precondition(lambda self: self.kills < 2)
    @rule(pick=st.integers(0, 9))
    def kill(self, pick):
        names = sorted(self.servers)
        victim = names[pick % len(names)]
        os.kill(self.servers[victim]["pid"], signal.SIGKILL)
        self.kills += 1
        self._settle(changed=[victim])

    def _settle(self, changed=()):
        def replaced():
            servers = wait_settled(self.served, self.size)
            return servers if not set(changed) & set(servers) else None

        servers = wait_until(replaced, 60, interval=0.05)
        assert servers, f"not settled:\n{self.served.output}"
        self.servers = servers

    @invariant()
    def matches_the_model(self):
        table = _m(self.served).json()["workers"]
        servers = {k: v for k, v in table.items() if v["server"]}
        assert len(servers) == self.size
        assert all(v["state"] == "ACKED" for v in servers.values())
        assert set(table) == {"Runtime-Main", *servers}

    def teardown(self):
        self.served.signal(signal.SIGTERM)
        code = self.served.wait(60)
        left = self.served.cleanup()
        assert code == 0, self.served.output
        assert not left and not session_members(self.served.pid)


GroupMachine.TestCase.settings = settings(
    max_examples=6,
    stateful_step_count=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
test_group_follows_the_model = GroupMachine.TestCase
