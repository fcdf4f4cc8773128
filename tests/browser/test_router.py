"""A deep link on a freshly started server goes through the router.

Streamlit runs a new server in its folder-based mode (the page scripts live in ``pages/``) until
some session has run the router; without pages/_routing.py a first visit to ``/runs`` would get
the bare page with the folder's file names as navigation.
"""
from __future__ import annotations

from playwright.sync_api import expect

from tests.browser.conftest import PAGE_TIMEOUT_MS, streamlit_server


def test_deep_link_on_a_fresh_server_gets_the_router(browser, tmp_path, screenshot):
    with streamlit_server(tmp_path / "fresh") as (url, _server):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            page = context.new_page()
            page.goto(f"{url}/runs")  # the very first session of this server
            expect(page.get_by_role("heading", name="Runs")).to_be_visible(timeout=PAGE_TIMEOUT_MS)
            nav = page.get_by_test_id("stSidebarNav")
            # sections and pages of the router ("Train" is both a section and a page)
            for label in ("Demo", "Review", "Live camera", "Dataset", "Runs"):
                expect(nav.get_by_text(label, exact=True)).to_be_visible()
            expect(nav.get_by_text("Train", exact=True)).to_have_count(2)
            expect(page.get_by_text("Device: ")).to_be_visible()
            # the helper modules are not pages
            expect(nav.get_by_text("routing")).to_have_count(0)
            expect(nav.get_by_text("runs views")).to_have_count(0)
            screenshot(page, "deep-link")
        finally:
            context.close()
