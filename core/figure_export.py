"""Static PNG export of plotly figures through kaleido, bounded in time and never blocking the caller.

kaleido drives a headless Chromium. Two ways it could hang a whole program: with no Chromium on the
machine its sync server thread dies with `ChromeNotFoundError` while the caller waits forever on
its queue, and a Chromium that starts but never answers blocks `fig.to_image` for good. So:

- `find_chromium()` looks for a browser first (the same search kaleido does, no process started);
  without one, `render_png` raises `RenderUnavailable` at once and callers fall back to HTML.
- Rendering runs on one daemon thread of our own that owns one event loop and one kaleido browser
  (a ~3 s start paid once per process, then about 0.3 s a figure); the caller waits on a future with
  a timeout (`MLSA_RENDER_TIMEOUT_S`, default 20 s). After a timeout the renderer is marked broken
  for the rest of the process, so later figures fall back at once instead of waiting again.
- Nothing is registered with `atexit` that could join a stuck thread: the thread is a daemon.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 20.0
WIDTH, HEIGHT = 1000, 640


class RenderUnavailable(RuntimeError):
    """No PNG can be rendered here (no Chromium, kaleido failed or timed out); write HTML instead."""


def render_timeout_s() -> float:
    try:
        return max(0.1, float(os.environ.get("MLSA_RENDER_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_TIMEOUT_S


def find_chromium() -> str | None:
    """The Chromium/Chrome executable kaleido would use (`BROWSER_PATH` first), or None. Starts nothing."""
    try:
        from choreographer.browsers.chromium import Chromium  # kaleido's own browser search; heavy-ish, lazy
    except ImportError:
        return None
    try:
        return Chromium.find_browser(skip_local=False)
    except Exception:  # a broken install or odd PATH entry: treat as "not found"
        log.debug("Chromium search failed", exc_info=True)
        return None


class _Renderer:
    """One event loop on a daemon thread, holding one open kaleido browser across calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kaleido-render", daemon=True)
        self.thread.start()
        self.browser: Any = None
        self.broken: str | None = None

    async def _png(self, fig) -> bytes:
        import kaleido  # lazy: kaleido pulls in choreographer and starts nothing until used

        if self.browser is None:
            browser = kaleido.Kaleido(n=1)
            await browser.open()
            self.browser = browser
        return await self.browser.calc_fig(fig, opts={"format": "png", "width": WIDTH, "height": HEIGHT})

    def run(self, make: Callable[[], Awaitable[bytes]], timeout: float) -> bytes:
        future = asyncio.run_coroutine_threadsafe(make(), self.loop)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self.broken = f"kaleido did not answer within {timeout:g} s"
            raise RenderUnavailable(self.broken) from None


_lock = threading.Lock()
_renderer: _Renderer | None = None


def render_png(fig, timeout: float | None = None) -> bytes:
    """PNG bytes of `fig`, or `RenderUnavailable` with a reason a person can act on. Never blocks longer
    than `timeout` seconds (default `MLSA_RENDER_TIMEOUT_S`)."""
    global _renderer
    timeout = render_timeout_s() if timeout is None else timeout
    with _lock:  # one figure at a time through the one browser
        if _renderer is not None and _renderer.broken:
            raise RenderUnavailable(f"{_renderer.broken} earlier in this process")
        if find_chromium() is None:
            raise RenderUnavailable("no Chromium/Chrome found (install Debian's `chromium` for PNG figures)")
        if _renderer is None:
            _renderer = _Renderer()
        renderer = _renderer
        try:
            return renderer.run(lambda: renderer._png(fig), timeout)
        except RenderUnavailable:
            raise
        except Exception as exc:  # ChromeNotFoundError, a crashed browser, a kaleido error
            renderer.browser = None  # the next call starts a new browser
            raise RenderUnavailable(f"kaleido failed ({type(exc).__name__}: {exc})") from exc


def _reset_for_tests() -> None:
    """Forget the renderer (tests simulate a hung or missing browser)."""
    global _renderer
    with _lock:
        _renderer = None
