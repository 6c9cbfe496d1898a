"""Where per-model work runs: in this process (the default), or as tasks on a Dask cluster.

`MLSA_DASK_SCHEDULER=tcp://host:8786` sends the heavy per-model computations (the daily cycle's drift checks,
training and bulk retraining, certification refits) to that scheduler's workers through `dask.distributed`.
A task takes plain inputs (prices, scored predictions, a settings snapshot without secrets) and returns plain
results (a drift report, a fitted model, test statistics); none needs a stored model's bytes (the drift checks use
prices, training and the certification refits fit their own): workers never open the database, so the driver stays the only
writer, in its usual transactions, and a worker that dies mid-task leaves nothing half written.

`executor()` gives the right one for the settings; callers `submit` named tasks and read each
`result()`. A task that raised re-raises its own exception on the driver (the same words as in process);
one whose workers died more often than the scheduler allows (it reschedules a killed worker's task,
`distributed.scheduler.allowed-failures`, 3 by default) raises `TaskFailed` naming the task.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from core.config import SECRET_FIELDS, Settings, get_settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
PACKAGE_DIR = Path(__file__).resolve().parent


class ClusterUnavailable(RuntimeError):
    """MLSA_DASK_SCHEDULER is set but the cluster cannot take work (no answer, or workers with other code)."""


class TaskFailed(RuntimeError):
    """A task that never returned: its worker died (killed, out of memory) more often than the scheduler
    retries, or the connection to the scheduler was lost. Nothing it computed was written."""


def task_settings(settings: Settings | None = None) -> Settings:
    """The settings a task needs, without the secrets (webhook URL, SMTP password): they never leave the driver."""
    settings = settings or get_settings()
    return dataclasses.replace(settings, **{name: "" for name in SECRET_FIELDS})


def code_fingerprint() -> str:
    """sha256 of the `core` package's sources: driver and workers must run the same code."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


class Handle(Protocol):
    def result(self) -> Any: ...


class Executor(Protocol):
    where: str
    remote: bool

    def submit(self, name: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Handle: ...


class _Deferred:
    """An in-process task: computed when its result is asked for, so the work happens in today's order."""

    def __init__(self, function: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self._function, self._args, self._kwargs = function, args, kwargs

    def result(self) -> Any:
        return self._function(*self._args, **self._kwargs)


class InProcess:
    """Runs every task in this process, when its result is read (no new dependency, today's behaviour)."""

    where = "in process"
    remote = False

    def submit(self, name: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Handle:
        return _Deferred(function, args, kwargs)


class _Remote:
    def __init__(self, name: str, future: Any) -> None:
        self.name, self._future = name, future

    def result(self) -> Any:
        from distributed.scheduler import KilledWorker  # lazy: heavy optional

        try:
            return self._future.result()
        except KilledWorker as exc:
            raise TaskFailed(f"task {self.name}: its worker died while running it, more often than the scheduler "
                             f"retries ({exc}); nothing of it was written") from exc
        except Exception as exc:
            if self._future.status == "error":  # the task itself raised: its own exception, as in process
                raise
            raise TaskFailed(f"task {self.name}: {self._future.status} ({type(exc).__name__}: {exc}); "
                             "nothing of it was written") from exc


class DaskExecutor:
    """Tasks on the Dask cluster behind `address`: submitted at once, read in order."""

    def __init__(self, client: Any, address: str) -> None:
        self.client, self.where, self.remote = client, f"dask {address}", True

    @classmethod
    def connect(cls, address: str) -> "DaskExecutor":
        try:
            from distributed import Client  # lazy: heavy optional
        except ImportError as exc:
            raise ClusterUnavailable(f"MLSA_DASK_SCHEDULER={address} is set but dask.distributed is not installed: "
                                     "pip install 'dask[distributed]' (see README), or unset the variable.") from exc
        try:
            client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterUnavailable(f"The Dask scheduler {address} (MLSA_DASK_SCHEDULER) did not answer within "
                                     f"{CONNECT_TIMEOUT_S} s ({exc}). Start it, or unset MLSA_DASK_SCHEDULER to run "
                                     "in this process; nothing was computed or written.") from exc
        executor = cls(client, address)
        try:
            executor.check_workers()
        except BaseException:
            client.close()
            raise
        return executor

    def check_workers(self) -> None:
        """Every worker imports this `core` with the same sources (a task is sent by reference, not by value)."""
        mine = code_fingerprint()
        try:
            theirs = self.client.run(code_fingerprint)
        except ImportError as exc:
            raise ClusterUnavailable(f"The workers of {self.where} cannot import the app's code ({exc}): start them "
                                     "from the project folder with its virtual environment (README).") from exc
        different = sorted(worker for worker, fingerprint in theirs.items() if fingerprint != mine)
        if different:
            raise ClusterUnavailable(f"{len(different)} worker(s) of {self.where} run other app code than this "
                                     f"process ({', '.join(different[:3])}): deploy the same version everywhere.")

    def submit(self, name: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Handle:
        key = f"{name}-{uuid.uuid4().hex[:8]}"  # unique: a rerun never reuses an old result
        return _Remote(name, self.client.submit(function, *args, key=key, pure=False, **kwargs))

    def close(self) -> None:
        self.client.close()


@contextmanager
def executor(settings: Settings | None = None) -> Iterator[Executor]:
    """In process, or the Dask cluster MLSA_DASK_SCHEDULER names (connected for the block, then closed)."""
    address = (settings or get_settings()).dask_scheduler
    if not address:
        yield InProcess()
        return
    remote = DaskExecutor.connect(address)
    log.info("running per-model tasks on %s", remote.where)
    try:
        yield remote
    finally:
        remote.close()
