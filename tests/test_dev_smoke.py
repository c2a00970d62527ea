"""The embedded command, started from a fresh clone, takes a charge from 202 to succeeded,
and the demo shop and feed work on it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

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


def test_embedded_system_runs_a_charge(fresh_clone):
    # Given `bazaar dev` started in a fresh clone with no PostgreSQL or Redis configured
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["PYTHONPATH"] = str(fresh_clone)
    proc = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "dev", "--port", str(port)],
        cwd=fresh_clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        banner = proc.stdout.readline()
        deadline = time.monotonic() + 20
        while "running at" not in banner and time.monotonic() < deadline:
            banner = proc.stdout.readline()
        # Then it says where it is
        assert f"http://127.0.0.1:{port}/api/v1" in banner
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
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
