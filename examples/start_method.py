"""A program that fixed Python's start method itself, before the runtime ran.

python examples/start_method.py   # workers are forked, as the program chose
"""

import multiprocessing
import os

from runtime import Runtime, skip_start_method_setup
from runtime.demo import app

multiprocessing.set_start_method("fork")  # say a library did this at import
skip_start_method_setup()  # use the global method; Runtime.start_method is ignored

rt = Runtime("preset", app=app)


@rt.main_process_start
def attach(rt):
    # a module-level Queue() matches the workers, since the runtime kept "fork"
    rt.shared_ctx.jobs = multiprocessing.Queue()


if __name__ == "__main__":
    rt.run(port=int(os.environ.get("PORT", 8085)), workers=2)
