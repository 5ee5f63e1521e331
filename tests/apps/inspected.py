"""An app with the inspector on, on a free port. RT_KEY sets the API key,
RT_INSPECTOR_HOST the address, RT_START_METHOD the start method. Custom
commands: echo(text, times=1), boom(), refuse() and interrupt() which raise,
and hello(who) from a subclass of the Inspector; RT_TAKEOVER sets a subclass
that replaces /healthz, which is refused."""

import os

from runtime import Runtime
from runtime.demo import app
from runtime.inspector import Inspector

env = os.environ.get
if env("RT_START_METHOD"):
    Runtime.start_method = env("RT_START_METHOD")

rt = Runtime("inspected", app=app)
rt.config.INSPECTOR = True
rt.config.INSPECTOR_PORT = 0
rt.config.INSPECTOR_HOST = env("RT_INSPECTOR_HOST", "127.0.0.1")
rt.config.INSPECTOR_API_KEY = env("RT_KEY") or None


@rt.inspector_command
def echo(text: str, times: int = 1):
    return text * times


@rt.inspector_command
async def boom():
    raise RuntimeError("the command failed on purpose")


@rt.inspector_command
def refuse():
    raise ValueError("a ValueError from inside the command")


@rt.inspector_command
def interrupt():
    raise KeyboardInterrupt


class Greeting(Inspector):
    def hello(self, who="you"):
        return f"hello {who} from {self.name}"


class Takeover(Greeting):  # RT_TAKEOVER: a subclass that replaces a route
    def healthz(self):
        return "always fine"


rt.inspector_class = Takeover if env("RT_TAKEOVER") else Greeting

if __name__ == "__main__":
    rt.run(host="127.0.0.1", port=0, workers=2)
