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
- A timeout or a failure kills the browser's whole process tree (choreographer's wrapper, the browser
  and whatever it started, found through /proc by parent and by process group) with SIGKILL: a browser
  that ignores SIGTERM must not outlive the renderer, nor this process.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
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


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, state) of every process, from /proc (empty without /proc)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        table[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def process_tree(pid: int) -> list[int]:
    """`pid` and every live process under it: its descendants by parent, and, when `pid` leads its own
    process group (choreographer starts the browser in a new session), every member of that group
    (a grandchild whose parent died was re-parented to init but is still in the group)."""
    table = _process_table()
    tree, stack = [pid], [pid]
    while stack:
        parent = stack.pop()
        for child, (ppid, _pgid, _state) in table.items():
            if ppid == parent and child not in tree:
                tree.append(child)
                stack.append(child)
    if pid in table and table[pid][1] == pid and pid != os.getpgrp():
        tree += [p for p, (_ppid, pgid, _state) in table.items() if pgid == pid and p not in tree]
    return [p for p in tree if table.get(p, (0, 0, "Z"))[2] not in ("Z", "X")]


def _renderer_children(browser_path: str | None) -> list[int]:
    """This process's children that run the renderer's browser (choreographer's wrapper or the browser
    itself), for when its `Popen` is not reachable. Other children (worker pools...) are left alone."""
    marks = ["choreographer", *([browser_path] if browser_path else [])]
    found = []
    for child, (ppid, _pgid, _state) in _process_table().items():
        if ppid != os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(mark in cmdline for mark in marks):
            found.append(child)
    return found


def kill_tree(root: int, popen: subprocess.Popen | None = None) -> list[int]:
    """SIGKILL `root` and its process tree (`process_tree`); reap `popen` (our child) so no zombie is
    left. Returns the pids signalled."""
    pids = process_tree(root)
    # leaves first, each parent still alive to reap its child (a parent killed first leaves its children
    # to init, which in a container may never reap them); a few tenths of a second per process at most
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        deadline = time.monotonic() + 0.2
        while pid != root and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    if popen is not None:
        try:
            popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            log.warning("the browser process %d did not end after SIGKILL", root)
    return pids


class _Renderer:
    """One event loop on a daemon thread, holding one open kaleido browser across calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kaleido-render", daemon=True)
        self.thread.start()
        self.browser: Any = None
        self.starting: Any = None  # the kaleido browser being opened (its process exists before open returns)
        self.broken: str | None = None

    async def _png(self, fig) -> bytes:
        import kaleido  # lazy: kaleido pulls in choreographer and starts nothing until used

        if self.browser is None:
            browser = self.starting = kaleido.Kaleido(n=1)
            await browser.open()
            self.browser, self.starting = browser, None
        return await self.browser.calc_fig(fig, opts={"format": "png", "width": WIDTH, "height": HEIGHT})

    def kill_browser(self) -> list[int]:
        """SIGKILL the browser's process tree (open or still opening) and forget it; returns the pids."""
        handles = [h for h in (self.browser, self.starting) if h is not None]
        self.browser = self.starting = None
        popens = [p for h in handles if isinstance(p := getattr(h, "subprocess", None), subprocess.Popen)]
        roots = [(p.pid, p) for p in popens] or [(pid, None) for pid in _renderer_children(find_chromium())]
        killed = [pid for root, popen in roots for pid in kill_tree(root, popen)]
        if killed:
            log.warning("killed the PNG renderer's browser processes %s", killed)
        return killed

    def run(self, make: Callable[[], Awaitable[bytes]], timeout: float) -> bytes:
        async def guarded() -> bytes:
            try:
                return await make()
            except Exception:
                if self.broken:  # abandoned after a timeout: its error (the killed browser) is no news
                    return b""
                raise

        future = asyncio.run_coroutine_threadsafe(guarded(), self.loop)
        try:
            return future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            self.broken = f"kaleido did not answer within {timeout:g} s"
            self.kill_browser()  # a browser that ignores SIGTERM must not outlive the render, nor this process
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
            renderer.kill_browser()  # whatever it left running; the next call starts a new browser
            raise RenderUnavailable(f"kaleido failed ({type(exc).__name__}: {exc})") from exc


def _reset_for_tests() -> None:
    """Forget the renderer (tests simulate a hung or missing browser)."""
    global _renderer
    with _lock:
        _renderer = None
