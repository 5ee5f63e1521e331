"""A custom process beside the workers: workers queue jobs, the mailer sends them.

python examples/mailer.py         # then: curl -X POST http://127.0.0.1:8083/
"""

import logging
import os

from runtime import Runtime

log = logging.getLogger("mailer")


def send_mail(queue):  # module level, so that spawn can import it
    try:
        while True:
            job = queue.get()
            log.warning("mailer sent %s", job)
    except KeyboardInterrupt:  # the manager's SIGTERM at shutdown
        pass


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        rt.shared_ctx.outbox.put(f"mail queued by {rt.m.name}")
    await send({"type": "http.response.start", "status": 202, "headers": []})
    await send({"type": "http.response.body", "body": b"queued\n"})


rt = Runtime("mailer", app=app)


@rt.main_process_start
def attach(rt):
    rt.shared_ctx.outbox = rt.context.Queue()


@rt.main_process_ready
def start_mailer(rt):
    rt.manager.manage("Mailer", send_mail, {"queue": rt.shared_ctx.outbox})


if __name__ == "__main__":
    rt.run(port=int(os.environ.get("PORT", 8083)), workers=2)
