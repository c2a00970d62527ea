"""The pages for people: the API reference rendered from the OpenAPI, and the landing page."""

from __future__ import annotations

import re

import pytest
from aiohttp import web

from web import openapi
from web.app import app_routes
from web.docs_page import group_operations, render_landing, render_reference
from web.views.pages import has_console


@pytest.fixture(scope="module")
def spec() -> dict:
    return openapi.build(app_routes())


def card(html: str, anchor: str) -> str:
    start = html.index(f'id="{anchor}"')
    return html[start:html.index("</article>", start)]


def test_every_operation_has_a_card_and_a_contents_entry(spec):
    # Given the app's own description
    html = render_reference(spec)
    # Then each operation appears once as a card, and once in the contents
    for path, item in spec["paths"].items():
        for method, op in item.items():
            anchor = f'op-{op["operationId"]}'
            assert html.count(f'id="{anchor}"') == 1, (method, path)
            assert html.count(f'href="#{anchor}"') == 2, (method, path)  # contents + permalink
    # ... in sections by domain, the platform's own pages last
    sections = [tag for tag, _ in group_operations(spec)]
    assert sections == ["users", "points", "shop", "concerts", "auction", "feed", "operations"]


def test_a_command_shows_its_body_job_type_result_and_reason_codes(spec):
    charge = card(render_reference(spec), "op-post_api_v1_points_charge")
    assert "Bearer token" in charge and "job points.charge" in charge
    assert "<code>amount</code>" in charge and "1 to 1,000,000" in charge
    assert 'href="#schema-Balance"' in charge  # the result shape, linked
    for code in ("MAX_BALANCE_EXCEEDED", "INVALID_REQUEST", "UNAUTHORIZED",
                 "IDEMPOTENCY_KEY_REUSED", "PAYLOAD_TOO_LARGE", "UNAVAILABLE"):
        assert f">{code}</span>" in charge, code


def test_a_plain_endpoint_shows_auth_parameters_and_bounds(spec):
    html = render_reference(spec)
    signup = card(html, "op-post_api_v1_users_signup")
    assert "no auth" in signup and "DUPLICATED_USER_NAME" in signup
    assert "3 to 32 characters" in signup and "[a-zA-Z0-9_]+" in signup
    job = card(html, "op-get_api_v1_jobs_job_id")
    assert "<code>job_id</code>" in job and "JOB_NOT_FOUND" in job
    assert "0..30 seconds" in job


def test_everything_from_the_description_is_escaped():
    # Given a description whose texts carry markup
    evil = "<script>alert(1)</script>"
    spec = {"info": {"title": evil, "version": "1", "description": evil},
            "paths": {"/api/v1/x/{id}": {"get": {
                "summary": evil, "tags": [evil], "operationId": evil,
                "parameters": [{"name": evil, "in": "query", "description": evil}],
                "responses": {"404": {"description": evil, "x-reason-codes": [evil]}}}}},
            "components": {"schemas": {}}}
    # Then none of it comes out as markup
    for html in (render_reference(spec), render_landing(spec, evil, console=False)):
        assert "<script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_pages_load_nothing_from_anywhere(spec):
    for html in (render_reference(spec), render_landing(spec, "http://h", console=True)):
        assert not re.search(r"<(script|link|img|iframe)\b|@import|url\(|\bsrc=", html)
        assert not re.search(r'href="(?!#|/)', html)  # every link stays on this server


def test_the_landing_page_links_the_console_only_when_it_is_served(spec):
    # Given an app without, and one with, a /console route
    bare, with_console = web.Application(), web.Application()
    with_console.router.add_get("/console", lambda request: web.Response())
    assert not has_console(bare) and has_console(with_console)
    # Then the landing page links it only in the second case
    for console in (False, True):
        html = render_landing(spec, "http://127.0.0.1:8000", console)
        assert ('href="/console"' in html) is console
        for url in ("/api/v1/docs", "/api/v1/openapi.json", "/healthz", "/readyz", "/metrics"):
            assert f'href="{url}"' in html


def test_the_pages_are_served_as_html(stack):
    # When the landing page and the reference are asked for
    for path in ("/", "/api/v1/docs"):
        reply = stack.api.get(f"{stack.api.base}{path}")
        # Then they are HTML pages that may load nothing from elsewhere
        assert reply.status == 200, reply
        assert reply.headers["content-type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in reply.headers["content-security-policy"]
    assert 'href="/console"' in stack.api.get(f"{stack.api.base}/").body
    # ... and both are in the description
    paths = stack.api.get("/openapi.json").body["paths"]
    assert "text/html" in paths["/"]["get"]["responses"]["200"]["content"]
    assert "text/html" in paths["/api/v1/docs"]["get"]["responses"]["200"]["content"]
