"""The operator commands: migrate (twice is harmless), create-admin, and every --help."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

import pytest

from db.models import User
from jobs.users import verify_password
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


def test_a_worker_with_a_malformed_process_count_says_so_before_starting(process_env):
    refused = bazaar({**process_env, "WORKER_PROCESSES": "two"}, "worker")
    assert refused.returncode == 2
    assert "WORKER_PROCESSES must be an integer" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize(("name", "value", "says"), [
    ("DB_POOL_SIZE", "0", "DB_POOL_SIZE must be at least 1, got 0"),
    ("WORKER_THREADS", "-3", "WORKER_THREADS must be at least 1, got -3"),
    ("ACCESS_TOKEN_TTL", "0", "ACCESS_TOKEN_TTL must be at least 1, got 0"),
    ("JOB_MAX_RETRIES", "-1", "JOB_MAX_RETRIES must be at least 0, got -1"),
    ("HEARTBEAT_INTERVAL", "0", "HEARTBEAT_INTERVAL must be a positive number, got '0'"),
    ("STALL_SECONDS", "nan", "STALL_SECONDS must be a positive number, got 'nan'"),
])
def test_a_count_or_a_time_out_of_range_is_refused_at_start_up(process_env, name, value, says):
    refused = bazaar({**process_env, name: value}, "migrate")
    assert refused.returncode == 2
    assert says in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize("cost", ["2", "100", str(2**21)])
def test_a_password_cost_scrypt_cannot_use_is_refused_at_start_up(process_env, cost):
    # (2 needs more memory than the hash allows, 100 is no power of two, 2**21 is too big:
    # each used to fail every sign-up with a 500)
    refused = bazaar({**process_env, "SCRYPT_N": cost}, "migrate")
    assert refused.returncode == 2
    assert "SCRYPT_N must be a power of two" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_create_admin_reads_the_password_from_stdin_or_the_environment(process_env, clean_db):
    # When the password is piped in, or set in BAZAAR_ADMIN_PASSWORD
    piped = subprocess.run([sys.executable, "-m", "web.cli", "create-admin", "stdin_boss",
                            "--password-stdin"], cwd=ROOT, env={**os.environ, **process_env},
                           input="piped-password-1\n", capture_output=True, text=True,
                           timeout=60)
    from_env = bazaar({**process_env, "BAZAAR_ADMIN_PASSWORD": "env-password-2"},
                      "create-admin", "env_boss")
    # Then both admins are made, with exactly that password (no newline kept)
    assert piped.returncode == from_env.returncode == 0, (piped.stderr, from_env.stderr)
    assert "piped-password-1" not in piped.stdout + piped.stderr
    admins = {u.username: u for u in User.select().where(User.is_admin)}
    assert verify_password("piped-password-1", admins["stdin_boss"].password_hash)
    assert verify_password("env-password-2", admins["env_boss"].password_hash)


def test_create_admin_without_a_password_says_how_to_give_one(process_env, clean_db):
    env = {**process_env, "BAZAAR_ADMIN_PASSWORD": ""}
    refused = bazaar(env, "create-admin", "no_password")
    assert refused.returncode == 2
    assert "--password-stdin" in refused.stderr and "BAZAAR_ADMIN_PASSWORD" in refused.stderr
    twice = bazaar(env, "create-admin", "two_ways", "a-long-password", "--password-stdin")
    assert twice.returncode == 2 and "not both" in twice.stderr
    assert User.select().count() == 0


def test_help_describes_each_command_and_the_variables_it_reads(capsys):
    from web.cli import COMMANDS, main

    # When `bazaar --help` is asked for
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    top = capsys.readouterr().out
    # Then it says what Bazaar is, lists every command, and the first settings to know
    assert "job platform" in top and "DATABASE_URL" in top and "REDIS_URL" in top
    for name, run, _ in COMMANDS:
        assert name in top and " ".join(run.__doc__.replace("``", "").split())[:30] in top
        # ... and each command's help describes it and lists what it reads
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert f"usage: bazaar {name}" in text and "environment" in text, name
        assert "LOG_LEVEL" in text, name
    # ... down to the ones only one command reads
    expectations = {"dev": ["PORT", "--port", "QUEUE_ACTIVE_LIMIT"],
                    "web": ["HOST", "PORT", "REDIS_URL", "JWT_SECRET", "MAX_BODY_BYTES"],
                    "worker": ["WORKER_PROCESSES", "WORKER_THREADS", "JOB_MAX_RETRIES"],
                    "create-admin": ["--password-stdin", "BAZAAR_ADMIN_PASSWORD"],
                    "migrate": ["DATABASE_URL"]}
    for name, words in expectations.items():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        for word in words:
            assert word in text, (name, word)
