"""HTTP adapter to the contact-tracing platform (httpx) and the retry policy (tenacity)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
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


class PlatformClient:
    def __init__(self, url: str, timeout_s: float, max_connections: int) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections),
            follow_redirects=False,
            headers={"User-Agent": "labflow-tracing"},
        )

    async def send(self, request: HandoffRequest) -> Outcome:
        """One attempt, bounded in total by the timeout (httpx's own timeouts are per read/write)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._client.post(
                    self.url + request.path, content=request.body, headers=request.headers
                )
        except TimeoutError:
            return Retry(f"no answer within {self.timeout_s:g} s")
        except httpx.TransportError as exc:
            return Retry(f"{type(exc).__name__}: {exc}"[:200])
        return classify(response.status_code, response.headers.get("Retry-After"), datetime.now(UTC))

    async def aclose(self) -> None:
        await self._client.aclose()
