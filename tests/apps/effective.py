"""Says which settings are in effect, from the manager and from a worker."""

from say import say

from runtime import Runtime
from runtime.demo import app

rt = Runtime("effective", app=app)
rt.config.GRACEFUL_TIMEOUT = 9.0


@rt.main_process_ready
def main_sees(rt):
    options, config = rt.options, rt.config
    say(f"main graceful {options.graceful_timeout} config {config.GRACEFUL_TIMEOUT}")


@rt.before_server_start
def worker_sees(rt):
    say(f"worker graceful {rt.options.graceful_timeout}")
