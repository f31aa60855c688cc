"""examples/browser/index.html in headless Chromium (Debian's, driven by Playwright).

The page is served from one local origin by a tiny static server and the service (a real
uvicorn) from another, so fetch and EventSource go through CORS for real: the page lists the
open conversations with a session token, follows changes through `EventSource`, and assigns
with If-Match; served from an origin not in CORS_ALLOW_ORIGINS it can read nothing and
change nothing.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from playwright.async_api import Browser, Page, async_playwright
from sqlalchemy import func, select

from inbox_service.core.db import transaction
from inbox_service.core.events import Event
from tests.frontend.conftest import EXAMPLES, Api, StartApi, static_site
from tests.frontend.tools import chromium_args, require_tool
from tests.support.factories import bearer

LIVE = 2_000  # ms: a change made elsewhere shows on the page within this


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = require_tool("chromium", "/usr/bin/chromium", "chromium-browser")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=chromium_args()
        )
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(browser: Browser, origin: str, api: Api, token: str) -> Page:
    page = await browser.new_page()
    await page.goto(f"{origin}/index.html#api={api.base_url}&token={token}")
    return page


async def listed(page: Page) -> list[str]:
    ids: list[str] = await page.eval_on_selector_all(
        "#conversations li", "items => items.map(item => item.dataset.id)"
    )
    return sorted(ids)


async def event_count(api: Api) -> int:
    async with transaction(api.sessionmaker) as session:
        return int(await session.scalar(select(func.count()).select_from(Event)) or 0)


async def test_the_page_lists_follows_and_assigns_live(start_api: StartApi) -> None:
    with static_site(EXAMPLES / "browser") as origin:
        api = await start_api(cors_allow_origins=origin)
        seeded = await api.add_conversations(api.inbox_a, 1, 2)
        await api.add_conversations(api.inbox_b, 3)  # not the agent's: never listed
        token = await api.mint(api.agent_id)
        async with chromium() as browser:
            page = await open_page(browser, origin, api, token)
            await page.wait_for_selector("body[data-ready=true]")
            assert await listed(page) == sorted(seeded)
            await page.wait_for_function("document.getElementById('live').textContent === 'live'")

            # Created afterwards: arrives through EventSource.
            started = time.monotonic()
            [created] = await api.add_conversations(api.inbox_a, 4)
            await page.wait_for_selector(f'li[data-id="{created}"]', timeout=LIVE)
            assert time.monotonic() - started < LIVE / 1000

            # Assigned by another user (an admin's key, elsewhere).
            async with api.http() as http:
                response = await http.post(
                    f"/v1/conversations/{seeded[0]}/assign",
                    json={"assignee_id": api.agent_id},
                    headers=bearer(api.admin_key),
                )
                assert response.status_code == 200, response.text
            await page.wait_for_selector(
                f'li[data-id="{seeded[0]}"][data-assignee="{api.agent_id}"]', timeout=LIVE
            )
            assert await page.text_content(f'li[data-id="{seeded[0]}"] .assignee') == "mine"

            # The page's own button: read with ETag, assign with If-Match.
            await page.click(f'li[data-id="{seeded[1]}"] button.assign')
            await page.wait_for_selector(
                f'li[data-id="{seeded[1]}"][data-assignee="{api.agent_id}"]', timeout=LIVE
            )
            assert (await api.conversation(seeded[1])).assignee_id == api.agent_id
            assert await page.text_content("#error") == ""


async def test_another_origin_can_read_nothing_and_change_nothing(start_api: StartApi) -> None:
    with (
        static_site(EXAMPLES / "browser") as allowed,
        static_site(EXAMPLES / "browser") as other,
    ):
        api = await start_api(cors_allow_origins=allowed)
        [conversation] = await api.add_conversations(api.inbox_a, 5)
        token = await api.mint(api.agent_id)
        events_before = await event_count(api)
        version_before = (await api.conversation(conversation)).version
        async with chromium() as browser:
            page = await open_page(browser, other, api, token)
            await page.wait_for_selector("body[data-ready=failed]")
            assert await listed(page) == []
            assert "Failed to fetch" in (await page.text_content("#error") or "")
            outcomes = await page.evaluate(
                """async ([api, token, id, me]) => {
                    const attempt = async (path, init) => {
                        try { return "read " + (await fetch(api + path, init)).status; }
                        catch (error) { return "blocked"; }
                    };
                    return [
                        await attempt("/v1/conversations/" + id + "/assign", {
                            method: "POST",
                            headers: { Authorization: "Bearer " + token,
                                       "Content-Type": "application/json" },
                            body: JSON.stringify({ assignee_id: me }),
                        }),
                        await attempt("/v1/conversations", {
                            headers: { Authorization: "Bearer " + token } }),
                        // A "simple" request goes out without a preflight, but its
                        // answer stays unreadable.
                        await attempt("/v1/conversations/" + id + "/assign", {
                            method: "POST",
                            headers: { "Content-Type": "text/plain" },
                            body: JSON.stringify({ assignee_id: me }),
                        }),
                    ];
                }""",
                [api.base_url, token, conversation, api.agent_id],
            )
            assert outcomes == ["blocked", "blocked", "blocked"]
        after = await api.conversation(conversation)
        assert after.assignee_id is None
        assert after.version == version_before
        assert await event_count(api) == events_before
