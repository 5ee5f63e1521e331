"""Small HTTP helpers over httpx for tests."""

from __future__ import annotations

import threading

import httpx


def client_for(url: str) -> tuple[httpx.Client, str]:
    """A client and base URL for ``http://host:port`` or ``unix:/path``."""
    if url.startswith("unix:"):
        transport = httpx.HTTPTransport(uds=url[len("unix:") :])
        return httpx.Client(transport=transport, timeout=20), "http://localhost"
    return httpx.Client(timeout=20), url


def get(url: str, path: str = "/") -> httpx.Response:
    client, base = client_for(url)
    with client:
        return client.get(base + path)


def workers_seen(url: str, expected: int, attempts: int = 200) -> set[str]:
    """Send fresh connections until ``expected`` distinct workers answered."""
    seen: set[str] = set()
    for _ in range(attempts):
        response = get(url)
        assert response.status_code == 200
        seen.add(response.json()["worker"])
        if len(seen) >= expected:
            break
    return seen


class InFlight:
    """A request running in a thread; ``result()`` waits for its response."""

    def __init__(self, url: str, path: str) -> None:
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(url, path), daemon=True)
        self._thread.start()

    def _run(self, url: str, path: str) -> None:
        try:
            self.response = get(url, path)
        except BaseException as exc:  # reported by result()
            self.error = exc

    def result(self, timeout: float = 30.0) -> httpx.Response:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        assert self.response is not None, "request still running"
        return self.response


class Load:
    """Threads sending requests on keep-alive connections; counts failures."""

    def __init__(self, url: str, threads: int = 6) -> None:
        self.url, self.requests, self.failures = url, 0, []
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        with httpx.Client(timeout=20) as client:
            while not self._done.is_set():
                try:
                    ok = client.get(self.url).status_code == 200
                    error = None if ok else "status"
                except httpx.HTTPError as exc:
                    error = repr(exc)
                with self._lock:
                    self.requests += 1
                    if error:
                        self.failures.append(error)

    def stop(self) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(30)
