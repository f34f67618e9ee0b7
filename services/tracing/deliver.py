"""HTTP adapter to the contact-tracing platform (aiohttp) and the retry policy (tenacity).

aiohttp rather than httpx: with 16 requests in flight to a local platform, httpx spent 1.7–1.9 ms of
CPU per POST (its pool checks every connection for expiry on each request, through anyio) and aiohttp
0.12–0.16 ms (C parser). The tracing process sends a burst of new cases while the gateway and the
worker hold the cores, so that CPU was most of the handoff delay (issue #16's sustained profile).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from services.tracing.handoff import Delivered, HandoffRequest, Outcome, Permanent, Retry, classify


class RetryableFailure(Exception):
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class PermanentFailure(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int
    give_up_after_s: float
    backoff_initial_s: float
    backoff_max_s: float


class wait_retry_after(wait_base):
    """The platform's `Retry-After` when it sent one, else the fallback strategy."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome is not None else None
        if isinstance(error, RetryableFailure) and error.retry_after_s is not None:
            return error.retry_after_s
        return self.fallback(retry_state)


def retrying(
    policy: RetryPolicy,
    attempts_before: int,
    age_s: float,
    before_sleep: Callable[[RetryCallState], Awaitable[None]],
    sleep: Callable[[float], Awaitable[None]],
) -> AsyncRetrying:
    """Retries of one event. The budget (attempts, time since queued) counts what earlier runs of the
    service already spent on it; the backoff itself restarts small after a restart."""
    return AsyncRetrying(
        retry=retry_if_exception_type(RetryableFailure),
        wait=wait_retry_after(wait_exponential_jitter(
            multiplier=policy.backoff_initial_s, max=policy.backoff_max_s, jitter=policy.backoff_initial_s
        )),
        stop=(stop_after_attempt(max(policy.max_attempts - attempts_before, 1))
              | stop_before_delay(max(policy.give_up_after_s - age_s, 0.0))),
        before_sleep=before_sleep,
        sleep=sleep,
    )


def expect_delivered(outcome: Outcome) -> Delivered:
    if isinstance(outcome, Retry):
        raise RetryableFailure(outcome.reason, outcome.after_s)
    if isinstance(outcome, Permanent):
        raise PermanentFailure(outcome.reason)
    return outcome


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for `url` (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`, as httpx
    and curl read them), decided once: aiohttp's own `trust_env` would read the environment and
    `.netrc` again on every request, through a thread."""
    parts = urlsplit(url)
    if parts.hostname is None or proxy_bypass(parts.hostname):
        return None
    return getproxies().get(parts.scheme)


class PlatformClient:
    """One session per process, opened on the loop at the first request (aiohttp binds it there)."""

    def __init__(self, url: str, timeout_s: float, max_connections: int) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self.proxy = proxy_for(self.url)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                headers={"User-Agent": "labflow-tracing"},
                skip_auto_headers=("Accept-Encoding",),
            )
        return self._session

    async def send(self, request: HandoffRequest) -> Outcome:
        """One attempt, bounded in total by the timeout (connection, request and answer)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._open().post(
                    self.url + request.path, data=request.body, headers=request.headers,
                    allow_redirects=False, proxy=self.proxy,
                ) as response:
                    await response.read()  # the connection is reused only once the answer is read
        except TimeoutError:
            return Retry(f"no answer within {self.timeout_s:g} s")
        except aiohttp.ClientError as exc:
            return Retry(f"{type(exc).__name__}: {exc}"[:200])
        return classify(response.status, response.headers.get("Retry-After"), datetime.now(UTC))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
