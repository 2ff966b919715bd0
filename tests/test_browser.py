"""The browser side, in a real browser: the demo chat page and ``/static/trioagents.js``.

Debian's chromium driven by Playwright's *sync* API in a worker thread (never two event loops
in one thread). The server runs in the test's trio loop. Skipped when ``/usr/bin/chromium`` is
missing (``apt-get install chromium``; ``pip install playwright``, no ``playwright install``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.test_connections import make_server
from trioagents import Agent, BuiltinModel
from trioagents.connections import Connection, ConnectionAgent, rpc
from trioagents.testing import open_test_server

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SHOT = ROOT / "docs" / "demo-chat.png"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class Counter(ConnectionAgent):
    """What the in-browser AgentClient talks to."""

    db = ":memory:"
    initial_state = {"count": 0}

    async def on_connect(self, connection: Connection, ctx: Any) -> None:
        if ctx.request.query.get("token") != "ok":
            connection.close(4000, "Unauthorized")

    async def on_message(self, connection: Connection, message: str | bytes) -> None:
        await connection.send(f"echo: {message}")

    @rpc
    async def add(self, n: int) -> int:
        new = await self.update_state(lambda s: {"count": s["count"] + n})
        return int(new["count"])

    @rpc
    async def countdown(self, n: int) -> Any:
        for i in range(n, 0, -1):
            yield i


AGENT_CLIENT_SCRIPT = """async () => {
  const { AgentClient, kebabCase, backoffDelay } = await import("/static/trioagents.js");
  const out = { kebab: kebabCase("ChatAgent"), backoff: backoffDelay(3, 1000, 60000, 1) };
  const closed = (client) => new Promise((r) => client.addEventListener("close", (e) => r(e.detail)));
  const opened = (client) => new Promise((r) => client.addEventListener("open", () => r()));

  const denied = new AgentClient({ agent: "Counter", name: "b", query: { token: "bad" } });
  out.denied = await closed(denied);
  out.deniedStatus = denied.status;

  const states = [];
  const client = new AgentClient({
    agent: "Counter", name: "b", query: () => ({ token: "ok" }),
    onStateUpdate: (s, source) => states.push([s.count, source]),
  });
  const messages = [];
  client.addEventListener("message", (e) => messages.push(e.detail));
  client.send("queued before open");
  await opened(client);
  out.sum = await client.call("add", [5]);
  out.identity = client.identity;  // arrived before the call's answer
  const chunks = [];
  out.countdown = await client.call("countdown", [3], { onChunk: (c) => chunks.push(c) });
  out.chunks = chunks;
  try { await client.call("missing"); } catch (err) { out.rpcError = err.message; }
  while (messages.length < 1) await new Promise((r) => setTimeout(r, 10));
  out.messages = messages;
  out.states = states;
  client.close();
  out.closed = await closed(client);
  return out;
}"""


def drive_browser(url: str) -> dict[str, Any]:
    """Open the demo page, chat, take screenshots, and exercise AgentClient (sync API)."""
    from playwright.sync_api import sync_playwright

    result: dict[str, Any] = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 880, "height": 600})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url + "/")
            page.wait_for_selector('#status[data-status="open"]', timeout=10_000)
            result["title"] = page.inner_text("#title")
            # Count the streamed deltas the page receives.
            page.evaluate(
                """() => { window.deltas = 0; window.trioagentsChat.addEventListener('message',
                   (e) => { if (e.detail.type === 'response.delta') window.deltas += 1; }); }"""
            )
            page.fill("#input", "hello from a real browser")
            page.click("#send")
            page.wait_for_selector('.msg.assistant[data-done="true"]', timeout=10_000)
            result["user"] = page.inner_text(".msg.user")
            result["answer"] = page.inner_text(".msg.assistant")
            result["deltas"] = page.evaluate("window.deltas")
            result["status"] = page.inner_text("#status")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "demo-chat.png"))
            if os.environ.get("TRIOAGENTS_DOCS_SCREENSHOT"):
                DOCS_SHOT.parent.mkdir(exist_ok=True)
                page.screenshot(path=str(DOCS_SHOT))
            page.goto(url + "/agents/assistant/chat")
            page.wait_for_selector('#status[data-status="open"]', timeout=10_000)
            result["agent_client"] = page.evaluate(AGENT_CLIENT_SCRIPT)
            result["page_errors"] = errors
        finally:
            browser.close()
    return result


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing")
async def test_demo_chat_page_and_agent_client_in_chromium() -> None:
    pytest.importorskip("playwright")
    agent = Agent("assistant", model=BuiltinModel(word_delay=0.02))
    with trio.fail_after(60):
        async with open_test_server(make_server(Counter, agents=[agent])) as srv:
            async with httpx.AsyncClient() as http:
                js = await http.get(srv.url + "/static/trioagents.js")
                assert js.status_code == 200 and js.headers["content-type"].startswith(
                    "text/javascript"
                )
                assert (await http.get(srv.url + "/static/nope.js")).status_code == 404
                assert (
                    await http.get(srv.url + "/static/..%2Fconnections%2F_web.py")
                ).status_code == 404
                assert (await http.get(srv.url + "/agents/nobody/chat")).status_code == 404
            result = await trio.to_thread.run_sync(drive_browser, srv.url)
    assert result["page_errors"] == []
    assert result["title"] == "assistant"
    assert result["user"] == "hello from a real browser"
    assert result["answer"] == "You said: hello from a real browser"
    assert result["deltas"] > 1  # streamed, not one block
    assert result["status"] == "open"
    assert (ARTIFACTS / "demo-chat.png").stat().st_size > 1000
    ac = result["agent_client"]
    assert ac["kebab"] == "chat-agent" and ac["backoff"] == 4000
    # close(4000) from on_connect reaches the browser as that code, and is terminal.
    assert ac["denied"] == {"code": 4000, "reason": "Unauthorized", "terminal": True}
    assert ac["deniedStatus"] == "closed"
    assert ac["identity"] == {"type": "cf_agent_identity", "name": "b", "agent": "counter"}
    assert ac["sum"] == 5
    assert ac["countdown"] is None and ac["chunks"] == [3, 2, 1]
    assert ac["rpcError"] == "unknown method 'missing'"
    assert ac["messages"] == ["echo: queued before open"]
    assert ac["states"] == [[0, "server"], [5, "server"]]
    assert ac["closed"] == {"code": 1000, "reason": "", "terminal": True}


def test_chromium_is_where_the_browser_test_expects_it() -> None:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    assert shutil.which("chromium") is not None
