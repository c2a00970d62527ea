"""The embedded command, started from a fresh clone, takes a charge from 202 to succeeded,
and the demo shop and feed work on it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, Api, free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def fresh_clone(tmp_path):
    target = tmp_path / "bazaar"
    if (ROOT / ".git").exists():
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True)
    else:  # a source tarball: copy what a clone would have
        shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(".venv", "var", "*.pyc"))
    return target


def dev_env(where: Path) -> dict[str, str]:
    """This environment without PostgreSQL or Redis, importing the code in ``where``."""
    base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    return {**base, "PYTHONPATH": str(where)}


def start_dev(where: Path, port: int, **env: str) -> subprocess.Popen:
    """``bazaar dev`` in ``where``, on embedded defaults unless ``env`` says otherwise."""
    return subprocess.Popen(
        [sys.executable, "-m", "web.cli", "dev", "--port", str(port)],
        cwd=where, env={**dev_env(where), **env}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )


def read_banner(proc: subprocess.Popen) -> list[str]:
    """The lines it printed up to the API reference's URL (the banner's second line)."""
    lines = [proc.stdout.readline()]
    deadline = time.monotonic() + 30
    while "API reference" not in lines[-1] and lines[-1] and time.monotonic() < deadline:
        lines.append(proc.stdout.readline())
    return lines


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    proc.stdout.close()


def test_embedded_system_runs_a_charge(fresh_clone):
    # Given `bazaar dev` started in a fresh clone with no PostgreSQL or Redis configured
    port = free_port()
    proc = start_dev(fresh_clone, port)
    try:
        banner = read_banner(proc)
        # Then it says where it is: the landing page, and the API reference
        running = next(line for line in banner if "running at" in line)
        assert f"http://127.0.0.1:{port}/ " in running
        assert f"http://127.0.0.1:{port}/api/v1/docs" in banner[-1]
        api = Api(f"http://127.0.0.1:{port}")
        for _ in range(100):
            try:
                if api.get(f"http://127.0.0.1:{port}/healthz").status == 200:
                    break
            except OSError:
                time.sleep(0.1)
        # When a user signs up, logs in and charges points
        token = api.signup_login("dev_user")
        accepted = api.post("/points/charge", {"amount": 1234}, token=token)
        assert accepted.status == 202, accepted
        # Then the job succeeds through the in-process worker, on a SQLite file in the clone
        job = api.wait_job(accepted.body["id"], token, timeout=20)
        assert job["status"] == "succeeded" and job["result"] == {"balance": 1234}
        assert api.get("/points", token=token).body == {"balance": 1234, "held": 0}
        assert (fresh_clone / "var" / "bazaar.sqlite3").exists()
        # ... and the demo shop works: the demo user orders from the cart and pays
        demo = api.login("demo", "demo-password")["access_token"]
        assert api.call("PUT", "/cart/items/1", {"quantity": 2}, token=demo).status == 200
        wait = {"Prefer": "wait=10"}
        ordered = api.post("/orders", {"from_cart": True}, token=demo, headers=wait)
        assert ordered.body["status"] == "succeeded", ordered
        paid = api.post(f"/orders/{ordered.body['result']['order_id']}/payment", token=demo,
                        headers=wait)
        assert paid.body["result"]["status"] == "PAID", paid
        # ... and so does the demo feed: a like and a comment reach the author's alarms
        feed = api.get("/posts").body["items"]
        assert len(feed) == 5 and feed[0]["title"] == "Bike repair tip"
        first = feed[-1]  # mina's "First light": 2 likes, 1 comment, in the demo data
        assert (first["like_count"], first["comment_count"]) == (2, 1)
        liked = api.post(f"/posts/{first['id']}/likes", token=demo, headers=wait)
        assert liked.body["result"] == {"post_id": first["id"], "like_count": 3,
                                        "liked": True}, liked
        said = api.post(f"/posts/{first['id']}/comments", {"comment": "Lovely"}, token=demo,
                        headers=wait)
        assert said.body["result"]["comment_count"] == 2, said
        mina = api.login("mina", "mina-password")["access_token"]
        alarms = api.get("/alarms", token=mina).body
        assert [a["type"] for a in alarms["items"][:2]] == ["NEW_COMMENT", "NEW_LIKE"]
        assert alarms["items"][0]["from_user"]["username"] == "demo"
        assert alarms["unread_count"] == len(alarms["items"])
    finally:
        stop(proc)


def test_a_second_dev_on_the_same_port_says_so_and_exits(tmp_path):
    # Given `bazaar dev` serving on a port
    port = free_port()
    first = start_dev(ROOT, port, DATABASE_URL=f"sqlite:///{tmp_path}/first.sqlite3")
    try:
        banner = read_banner(first)
        assert f"http://127.0.0.1:{port}/api/v1/docs" in banner[-1], banner
        landing = Api(f"http://127.0.0.1:{port}").get(f"http://127.0.0.1:{port}/")
        assert landing.status == 200 and 'href="/api/v1/docs"' in landing.body
        # When a second one is started on the same port
        second = subprocess.run(
            [sys.executable, "-m", "web.cli", "dev", "--port", str(port)], cwd=ROOT,
            env={**dev_env(ROOT), "DATABASE_URL": f"sqlite:///{tmp_path}/second.sqlite3"},
            capture_output=True, text=True, timeout=60)
        # Then it says the port is taken and exits with an error, having started nothing
        assert second.returncode == 1, second
        assert f"port {port} on 127.0.0.1 is already in use" in second.stderr
        assert "running at" not in second.stdout and "Traceback" not in second.stderr
        assert not (tmp_path / "second.sqlite3").exists()
        # ... and the first one still serves
        assert Api("").get(f"http://127.0.0.1:{port}/healthz").status == 200
    finally:
        stop(first)
