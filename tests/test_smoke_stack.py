"""The process stack answers and runs a charge end to end."""

import pytest

from tests.conftest import process_stack


@pytest.fixture(scope="module")
def stack(process_env):
    """Real processes: this module's tests need them."""
    yield from process_stack(process_env)


def test_charge_goes_from_202_to_succeeded(stack):
    # Given a user
    api = stack.api
    token = api.signup_login("smoke_user")
    # When they charge points
    reply = api.post("/points/charge", {"amount": 250}, token=token)
    # Then the command is accepted and completes
    assert reply.status == 202, reply
    assert reply.headers["location"] == f"/api/v1/jobs/{reply.body['id']}"
    assert reply.headers["retry-after"] == "1"
    job = api.wait_job(reply.body["id"], token)
    assert job["status"] == "succeeded"
    assert job["result"] == {"balance": 250}
    assert api.get("/points", token=token).body == {"balance": 250, "held": 0}
