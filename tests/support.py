"""Test support: a tiny HTTP client and a stack of real Bazaar processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from db.connection import database

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Reply:
    """An HTTP answer: status, headers and the decoded body."""

    status: int
    headers: dict[str, str]
    body: Any

    @property
    def code(self) -> str | None:
        """The error reason code, if any."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None


class Api:
    """A blocking client for ``/api/v1`` (good enough for contract tests)."""

    def __init__(self, base: str) -> None:
        self.base = base.rstrip("/")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        timeout: float = 40,
    ) -> Reply:
        """Send one request; ``body`` is JSON-encoded unless ``raw`` is given."""
        url = path if path.startswith("http") else f"{self.base}/api/v1{path}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return _reply(response.status, response.headers, response.read())
        except urllib.error.HTTPError as e:
            return _reply(e.code, e.headers, e.read())

    def get(self, path: str, **kw: Any) -> Reply:
        """GET."""
        return self.call("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        """POST."""
        return self.call("POST", path, body, **kw)

    def signup_login(self, username: str, password: str = "password123") -> str:
        """Create a user and return an access token."""
        reply = self.post("/users/signup", {"username": username, "password": password})
        assert reply.status == 201, reply
        return self.login(username, password)["access_token"]

    def login(self, username: str, password: str = "password123") -> dict:
        """Log in; the token pair."""
        reply = self.post("/users/login", {"username": username, "password": password})
        assert reply.status == 200, reply
        return reply.body

    def wait_job(self, job_id: str, token: str, timeout: float = 30) -> dict:
        """Long-poll a job until it is terminal."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self.get(f"/jobs/{job_id}?wait=10", token=token)
            assert reply.status == 200, reply
            if reply.body["status"] in ("succeeded", "failed"):
                return reply.body
        raise AssertionError(f"job {job_id} not terminal after {timeout}s")


def _reply(status: int, headers: Any, raw: bytes) -> Reply:
    try:
        body: Any = json.loads(raw) if raw else None
    except ValueError:
        body = raw.decode(errors="replace")
    return Reply(status, {k.lower(): v for k, v in headers.items()}, body)


def admin_token(api: Api, database) -> str:
    """Sign up a fresh user and give it the admin role: its access token."""
    from db.models import User

    name = f"admin_{uuid.uuid4().hex[:10]}"
    token = api.signup_login(name)
    with database.connection_context():
        User.update(is_admin=True).where(User.username == name).execute()
    return token


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    """Real ``bazaar web``, Dramatiq worker and scheduler processes for one test scope."""

    env: dict[str, str]
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    root: Path = ROOT  # the source tree the processes run (``bench.web_pairs``: another one)

    @property
    def api(self) -> Api:
        """A client for the web process."""
        return Api(f"http://127.0.0.1:{self.port}")

    def _spawn(self, name: str, argv: list[str], **env: str) -> subprocess.Popen:
        log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bazaar-{name}-{self.port}.log"
        with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                argv, cwd=self.root, env={**os.environ, **self.env, **env}, stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_web(self, wait: bool = True) -> None:
        """Start the web process and wait until it answers (``wait=False``: call
        ``wait_web`` later, to start other processes meanwhile)."""
        self._spawn("web", [sys.executable, "-m", "web.cli", "web"], PORT=str(self.port))
        if wait:
            self.wait_web()

    def wait_web(self) -> None:
        """Wait until the web process answers on its port."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("web did not start; see its log")

    def start_worker(self, name: str = "worker", processes: int = 1, threads: int = 8) -> None:
        """Start ``bazaar worker`` as the Procfile does (its own process group)."""
        self._spawn(name, [sys.executable, "-m", "web.cli", "worker"],
                    WORKER_PROCESSES=str(processes), WORKER_THREADS=str(threads))

    def start_scheduler(self, name: str = "scheduler") -> None:
        """Start a scheduler process."""
        self._spawn(name, [sys.executable, "-m", "web.cli", "scheduler"])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a process's whole group and reap it."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def terminate(self, name: str, timeout: float = 20) -> None:
        """Stop a process as its supervisor would: SIGTERM to it alone (a worker's main
        process passes it on to its children once, and they shut down cleanly), then
        reap it. ``kill`` signals the whole group: a worker's children get it twice and
        exit at once."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        """Stop everything (TERM, then KILL)."""
        stop_all(self)


def stop_all(*stacks: Stack) -> None:
    """Stop every process of ``stacks``: TERM to each process group at once, then KILL
    what still runs after 10 s (they shut down side by side, not one after another)."""
    procs = [proc for stack in stacks for proc in stack.procs.values()]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    for stack in stacks:
        for name in list(stack.procs):
            stack.kill(name)


def two_webs(env: dict[str, str], processes: int = 2, threads: int = 8,
             scheduler: bool = False) -> Iterator[tuple[Stack, Stack]]:
    """Two web processes on one database and Redis, a worker (and a scheduler) on the
    first: a module's fixture ``yield from``s it."""
    first, second = Stack(env), Stack(env)
    first.start_worker(processes=processes, threads=threads)
    if scheduler:
        first.start_scheduler()
    first.start_web(wait=False)
    second.start_web(wait=False)
    first.wait_web()
    second.wait_web()
    yield first, second
    stop_all(second, first)


def now() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(UTC)


def parse_time(value: str) -> datetime:
    """An ISO 8601 time that must carry a UTC offset."""
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timedelta(0), value
    return moment


def finish(api: Api, reply: Reply, token: str) -> dict:
    """The terminal job of a command answered 200 (Prefer: wait) or 202."""
    assert reply.status in (200, 202), reply
    if reply.status == 200:
        return reply.body
    return api.wait_job(reply.body["id"], token)


def succeeded(job: dict) -> dict:
    """The result of a job that must have succeeded."""
    assert job["status"] == "succeeded", job
    assert job["error"] is None
    return job["result"]


def assert_failed(job: dict, code: str) -> None:
    """The job failed with ``code``."""
    assert job["status"] == "failed", job
    assert job["error"]["code"] == code, job
    assert job["result"] is None


def run_together(*actions: Callable[[], None]) -> None:
    """Start every action on its own thread at the same moment, and wait for all.

    A thread that ends holding a pooled connection keeps it checked out for good, so each
    thread gives back whatever connection its action left open (a later test's threads
    would otherwise find the session's pool short).
    """
    start = threading.Barrier(len(actions))

    def when_all_ready(action: Callable[[], None]) -> None:
        try:
            start.wait(timeout=60)  # (one that never comes breaks the barrier for all)
            action()
        finally:
            if database.obj is not None and not database.is_closed():
                database.close()

    threads = [threading.Thread(target=when_all_ready, args=(a,)) for a in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@dataclass
class SseEvent:
    """One server-sent event."""

    id: str | None
    event: str | None
    data: Any


class SseReader:
    """A blocking ``text/event-stream`` reader (a browser's EventSource, minus retries)."""

    def __init__(self, url: str, token: str, last_event_id: str | None = None,
                 timeout: float = 20) -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        request = urllib.request.Request(url, headers=headers)
        self.response = urllib.request.urlopen(request, timeout=timeout)
        self.status = self.response.status
        self.content_type = self.response.headers.get("Content-Type", "")

    def next(self) -> SseEvent:
        """The next event (comments such as ``: ping`` are skipped)."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline().decode().rstrip("\r\n")
            if line == "":
                if fields:
                    data = fields.get("data")
                    return SseEvent(fields.get("id"), fields.get("event"),
                                    json.loads(data) if data else None)
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")

    def take(self, n: int) -> list[SseEvent]:
        """The next ``n`` events."""
        return [self.next() for _ in range(n)]

    def close(self) -> None:
        """Hang up."""
        self.response.close()
