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
- Nothing is registered with `atexit` that could join a stuck thread: the thread is a daemon. The one exit
  hook (`_close_at_exit`) kills the browser's process tree and then removes its temporary profile itself:
  left to `tempfile`'s own finalizer, the profile was removed while Chromium still wrote into it and the
  interpreter printed a harmless but alarming "Directory not empty" traceback on exit.
- A timeout or a failure kills the browser's whole process tree (choreographer's wrapper, the browser
  and whatever it started, found through /proc by parent and by process group) with SIGKILL: a browser
  that ignores SIGTERM must not outlive the renderer, nor this process.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 20.0
CLOSE_TIMEOUT_S = 5.0  # at exit, how long the browser gets to quit before it is killed
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


def remove_profile(handle: Any) -> None:
    """Remove a kaleido browser's temporary Chromium profile, once its processes are dead, and detach
    `tempfile`'s exit finalizer so nothing tries again at exit (choreographer keeps the directory in
    `_browser_impl.tmp_dir`; a handle without one is left alone)."""
    tmp_dir = getattr(getattr(handle, "_browser_impl", None), "tmp_dir", None)
    if tmp_dir is None:
        return
    finalizer = getattr(getattr(tmp_dir, "temp_dir", None), "_finalizer", None)
    if finalizer is not None:
        finalizer.detach()
    shutil.rmtree(tmp_dir.path, ignore_errors=True)
    tmp_dir.exists = Path(tmp_dir.path).exists()  # choreographer's own clean() then finds nothing to do


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
            _hook_exit()
        return await self.browser.calc_fig(fig, opts={"format": "png", "width": WIDTH, "height": HEIGHT})

    def kill_browser(self, reason: str = "") -> list[int]:
        """SIGKILL the browser's process tree (open or still opening), remove its profile and forget it; returns
        the pids. With a `reason` (a timeout, a failure) the kill is logged as a warning."""
        handles = [h for h in (self.browser, self.starting) if h is not None]
        self.browser = self.starting = None
        for handle in handles:  # its watchdog would wake on the kill, warn "Wait expired" and clean up a second time
            if (watchdog := getattr(handle, "_watch_dog_task", None)) is not None and not self.loop.is_closed():
                self.loop.call_soon_threadsafe(watchdog.cancel)
        popens = [p for h in handles if isinstance(p := getattr(h, "subprocess", None), subprocess.Popen)]
        roots = [(p.pid, p) for p in popens] or [(pid, None) for pid in _renderer_children(find_chromium())]
        killed = [pid for root, popen in roots for pid in kill_tree(root, popen)]
        for handle in handles:  # dead now: nothing writes into the profile any more
            remove_profile(handle)
        if killed and reason:
            log.warning("killed the PNG renderer's browser processes %s (%s)", killed, reason)
        return killed

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Close the browser the way choreographer does (its watchdog cancelled, Chromium asked to quit and
        waited for, then its profile removed), on the render thread, waiting at most `timeout` seconds; a
        browser that does not close in time, or a renderer already broken, is killed instead."""
        browser = self.browser
        if browser is not None and not self.broken:
            self.browser = None
            try:
                asyncio.run_coroutine_threadsafe(browser.close(), self.loop).result(timeout)
            except Exception:  # a timeout, or a browser that died meanwhile: kill whatever is left
                log.debug("closing the PNG renderer's browser failed; killing it", exc_info=True)
                self.browser = browser
        self.kill_browser()  # a no-op when closed: no handle, no child of ours left running

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
            self.kill_browser(self.broken)  # a browser that ignores SIGTERM must not outlive the render, nor this process
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
            renderer.kill_browser("kaleido failed")  # whatever it left running; the next call starts a new browser
            raise RenderUnavailable(f"kaleido failed ({type(exc).__name__}: {exc})") from exc


def _close_at_exit() -> None:
    """At interpreter exit: close the idle browser, then remove its profile (quietly, in that order). Bounded
    (`CLOSE_TIMEOUT_S`, then SIGKILL and a reap), never a join of the render thread."""
    renderer = _renderer
    if renderer is not None:
        try:
            renderer.close()
        except Exception:  # at exit nothing is worth a traceback; the process ends either way
            log.debug("closing the PNG renderer at exit failed", exc_info=True)


_exit_hooked = False


def _hook_exit() -> None:
    """Register `_close_at_exit` once, after the first browser made its profile: exit hooks run last-registered
    first, so it runs before `tempfile`'s finalizer would try to remove the profile under a live Chromium."""
    global _exit_hooked
    if not _exit_hooked:
        atexit.register(_close_at_exit)
        _exit_hooked = True


def _reset_for_tests() -> None:
    """Close and forget the renderer (tests simulate a hung or missing browser); a forgotten open browser would
    outlive it and die noisily at exit."""
    global _renderer
    with _lock:
        if _renderer is not None:
            _renderer.close()
        _renderer = None
