"""A person's way in, in a real browser: the landing page, the docs link, the reference.

Headless Chromium is Debian's (``make browser`` installs it when missing); Playwright drives
it and downloads nothing. The test is skipped only when that Chromium is absent or cannot
start. It leaves a screenshot of the reference in docs/api-docs.png.
"""

from __future__ import annotations

from playwright.sync_api import expect

from tests.support import ROOT

SCREENSHOT = ROOT / "docs" / "api-docs.png"
SECTIONS = ["Users", "Points", "Shop", "Concerts", "Auction", "Feed",
            "Jobs, operations and docs"]




def test_a_newcomer_finds_the_reference_and_a_command_in_it(browser, stack):
    base = stack.api.base
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    # Given the landing page
    page.goto(f"{base}/")
    expect(page).to_have_title("Bazaar")
    for name in ("OpenAPI 3.1", "Health", "Readiness", "Metrics"):
        expect(page.get_by_role("link", name=name)).to_be_visible()
    expect(page.locator('a[href="/console"]')).to_have_count(1)  # the operators' page
    # When the newcomer follows the docs link
    page.get_by_role("link", name="API reference").click()
    page.wait_for_url(f"{base}/api/v1/docs")
    # Then every domain has its section and its entry in the contents
    expect(page.locator("h2.section")).to_contain_text([*SECTIONS, "Schemas"])
    contents = page.get_by_role("navigation", name="Contents")
    for name in SECTIONS:
        expect(contents.locator("a.domain", has_text=name)).to_be_visible()
    # When they pick POST /points/charge in the contents
    contents.locator('a[href="#op-post_api_v1_points_charge"]').click()
    charge = page.locator("#op-post_api_v1_points_charge")
    # Then the operation is in view with its body, its job and its reason codes
    expect(charge).to_be_in_viewport()
    expect(charge.locator(".op-head")).to_contain_text("POST/api/v1/points/charge")
    expect(charge).to_contain_text("job points.charge")
    expect(charge).to_contain_text("1 to 1,000,000")
    for code in ("MAX_BALANCE_EXCEEDED", "INVALID_REQUEST", "UNAUTHORIZED",
                 "IDEMPOTENCY_KEY_REUSED"):
        expect(charge.locator(".code", has_text=code).first).to_be_visible()
    # ... and the result shape links to its schema
    charge.locator('a[href="#schema-Balance"]').first.click()
    expect(page.locator("#schema-Balance")).to_be_in_viewport()
    contents.locator('a[href="#op-post_api_v1_points_charge"]').click()
    # ... nothing was fetched from anywhere else, and nothing failed
    assert all(url.startswith(base) for url in asked), asked
    assert errors == []
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
    page.close()
