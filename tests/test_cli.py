"""The operator commands: migrate (twice is harmless) and create-admin."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

from db.models import User
from tests.support import ROOT


def bazaar(process_env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "web.cli", *args], cwd=ROOT,
                          env={**os.environ, **process_env}, capture_output=True, text=True,
                          timeout=60)


def test_migrate_twice_applies_nothing_the_second_time(process_env):
    first = bazaar(process_env, "migrate")
    second = bazaar(process_env, "migrate")
    assert first.returncode == second.returncode == 0, first.stderr
    assert "none pending" in second.stdout


def test_create_admin_makes_and_promotes_admins(process_env, clean_db):
    made = bazaar(process_env, "create-admin", "boss_user", "a-long-password")
    assert made.returncode == 0, made.stderr
    assert "created admin boss_user" in made.stdout
    User.create(username="promote_me", password_hash="x", created_at=datetime(2026, 1, 1))
    promoted = bazaar(process_env, "create-admin", "promote_me", "another-password")
    assert "promoted admin promote_me" in promoted.stdout
    assert [u.username for u in User.select().where(User.is_admin).order_by(User.id)] == [
        "boss_user", "promote_me"]


def test_create_admin_refuses_a_bad_username(process_env, clean_db):
    refused = bazaar(process_env, "create-admin", "no spaces", "a-long-password")
    assert refused.returncode == 2
    assert "username" in refused.stderr
    assert User.select().count() == 0


def test_production_mode_refuses_to_start_without_a_secret(process_env):
    env = {**process_env, "BAZAAR_PRODUCTION": "1", "JWT_SECRET": ""}
    refused = bazaar(env, "migrate")
    assert refused.returncode == 2
    assert "JWT_SECRET" in refused.stderr and "Traceback" not in refused.stderr
