"""Every operation of the OpenAPI, fuzzed by schemathesis (valid and invalid requests).

The description is the one the app serves (built from the same route declarations and
msgspec schemas). Each operation gets ``FUZZ_EXAMPLES`` generated cases per generation
mode (positive and negative), sent to the in-process app as a logged-in user, or as an
admin for the admin operations. Every answer must be: no 5xx; a status, content type,
headers and body that the description documents; every error in the contract's shape
with a reason code the description lists for that status; invalid input refused.

``make test`` runs a bounded number of cases; ``make fuzz`` runs ``FUZZ_EXAMPLES=300``.

Not checked: that every schema-valid request is accepted (``positive_data_acceptance``).
The description cannot say everything the server checks: a cursor must be one the list
gave out, a date must lie ahead, an id must exist. Those answer documented 4xx codes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from db.models import User
from tests.support import Stack
from web import openapi
from web.app import app_routes

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings(
    "ignore::hypothesis.errors.HypothesisDeprecationWarning")]

DESCRIPTION = openapi.build(app_routes())
schema = schemathesis.openapi.from_dict(DESCRIPTION)
schema.config.generation.update(max_examples=FUZZ_EXAMPLES)
# A body over MAX_BODY_BYTES is refused 413 before it is parsed: a rejection too
_rejection = schema.config.checks.negative_data_rejection
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]


@pytest.fixture(scope="module")
def stack(process_env) -> Iterator[Stack]:
    """A real web process (and a worker): the fuzzing client and the server each get a
    core of their own, which halves the run."""
    s = Stack(process_env)
    s.start_worker(processes=1, threads=4)
    s.start_web()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sessions(stack, database) -> Iterator[dict[str, tuple[requests.Session, dict]]]:
    """A logged-in user's and an admin's HTTP sessions, and their Authorization header."""
    out = {}
    for role in ("user", "admin"):
        name = f"fuzz_{role}_{uuid.uuid4().hex[:6]}"
        token = stack.api.signup_login(name)
        if role == "admin":
            with database.connection_context():
                User.update(is_admin=True).where(User.username == name).execute()
        out[role] = requests.Session(), {"Authorization": f"Bearer {token}"}
    yield out
    for session, _ in out.values():
        session.close()


def _headers_negative(case) -> bool:
    """A case generated to break its headers (a missing Authorization, say) is sent as
    generated: adding the token back would make it a valid request."""
    info = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    return info is not None and info.mode == GenerationMode.NEGATIVE


def _streams(case) -> bool:
    responses = case.operation.definition.raw.get("responses", {})
    return any("text/event-stream" in r.get("content", {}) for r in responses.values())


def _documented_codes(case, status: int) -> set[str]:
    response = case.operation.definition.raw.get("responses", {}).get(str(status), {})
    return set(response.get("x-reason-codes", ()))


SENT: dict[str, list[int]] = {}


@pytest.fixture(scope="module")
def report(request) -> Iterator[None]:
    """One line after the run: operations, cases sent, answers by status class."""
    yield
    statuses = [s for sent in SENT.values() for s in sent]
    by_class = {f"{c}xx": sum(1 for s in statuses if s // 100 == c) for c in (2, 4, 5)}
    plugins = request.config.pluginmanager
    with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
        plugins.get_plugin("terminalreporter").write_line(
            f"\nschemathesis: {len(SENT)} operations, {len(statuses)} cases, "
            f"{FUZZ_EXAMPLES} examples per operation asked, answers {by_class}")


@schema.parametrize()
def test_every_operation(case, stack, sessions, report):
    sent = SENT.setdefault(case.operation.label, [])
    session, auth = sessions["admin" if case.path.startswith("/api/v1/admin/") else "user"]
    headers = {} if _headers_negative(case) else auth
    if _streams(case):  # an event stream stays open: read its head only
        kwargs = case.as_transport_kwargs(base_url=stack.api.base, headers=headers)
        with session.request(**kwargs, stream=True, timeout=10) as response:
            sent.append(response.status_code)
            assert response.status_code < 500, case.as_curl_command()
            if response.status_code == 200 and case.method == case.operation.method.upper():
                assert response.headers["Content-Type"].startswith("text/event-stream")
        return
    response = case.call(base_url=stack.api.base, session=session, headers=headers)
    sent.append(response.status_code)
    case.validate_response(response, excluded_checks=[positive_data_acceptance],
                           headers=headers)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) <= {"code", "message", "fields"} and error["message"]
        if case.method == case.operation.method.upper():  # (not a method the path refuses)
            allowed = _documented_codes(case, response.status_code)
            assert error["code"] in allowed, (response.status_code, error,
                                              case.as_curl_command())

