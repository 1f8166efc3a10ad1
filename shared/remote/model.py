"""A model that runs on a remote endpoint, behind the same interface as a local `Model`.

The data plane cannot tell the difference: signature checks run here, on the manifest, before a byte
leaves the function; then `answer()` forwards the tensors through a transport under three guards:

  - a deadline: timeouts per attempt below the caller's limit, and no retry that could not finish in time;
  - bounded retries with full jitter, for throttling and 5xx only (never a 4xx, never a timeout);
  - a circuit breaker, so a dead endpoint costs nothing per request.

When the endpoint cannot answer, the local compressed variant (if the artifact has one) answers,
marked `{"degraded": true, "served_by": "function"}`; otherwise 503 with Retry-After.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shared.artifact.manifest import Manifest
from shared.config import Settings
from shared.errors import ArtifactError, EndpointUnavailable, NotFound, PayloadTooLarge, RejectedByEndpoint, SlimserveError
from shared.protocol import codec
from shared.remote.async_invoke import AsyncInvoker
from shared.remote.breaker import CircuitBreaker
from shared.remote.transports import EndpointFailure, EndpointRejected, Reply, Transport
from shared.serving.interface import Described
from shared.serving.local import LocalModel
from shared.serving.text import TextEncoder

log = logging.getLogger("slimserve")

DEGRADED = {"degraded": True, "served_by": "function"}


@dataclass(frozen=True)
class RetryPolicy:
    connect_timeout_s: float
    read_timeout_s: float
    deadline_s: float
    retries: int
    backoff_s: float
    backoff_cap_s: float

    @classmethod
    def from_settings(cls, s: Settings) -> RetryPolicy:
        policy = cls(
            s.endpoint_connect_timeout_s,
            s.endpoint_read_timeout_s,
            s.endpoint_deadline_s,
            s.endpoint_retries,
            s.endpoint_backoff_s,
            s.endpoint_backoff_cap_s,
        )
        if policy.attempt_s > policy.deadline_s:
            raise ArtifactError(
                f"SLIMSERVE_ENDPOINT_DEADLINE_S={policy.deadline_s} cannot hold one attempt "
                f"(connect {policy.connect_timeout_s}s + read {policy.read_timeout_s}s)"
            )
        if policy.retries < 0:
            raise ArtifactError("SLIMSERVE_ENDPOINT_RETRIES must not be negative")
        return policy

    @property
    def attempt_s(self) -> float:
        """The longest one attempt can take."""
        return self.connect_timeout_s + self.read_timeout_s

    def backoff(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.backoff_cap_s, self.backoff_s * 2**retry))


@dataclass
class RouterStats:
    """What the router did, per process: requests, endpoint attempts, retries, answers by kind."""

    requests: int = 0
    attempts: int = 0
    retries: int = 0
    answered: int = 0  # by the endpoint
    rejected: int = 0  # 4xx from the endpoint, passed on as 400
    failures: dict[str, int] = field(default_factory=dict)  # by kind: down, timeout, throttled, server...
    short_circuited: int = 0  # breaker open: the endpoint was not called
    degraded: int = 0
    unavailable: int = 0
    deferred: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)

    def fail(self, kind: str) -> None:
        with self._lock:
            self.failures[kind] = self.failures.get(kind, 0) + 1


class RemoteModel(Described):
    def __init__(
        self,
        manifest: Manifest,
        transport: Transport,
        breaker: CircuitBreaker,
        policy: RetryPolicy,
        fallback: LocalModel | None = None,
        max_sync_bytes: int = 6 * 1024 * 1024,
        deferrer: AsyncInvoker | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        text: TextEncoder | None = None,
    ):
        self.manifest = manifest
        self.text = text or (fallback.text if fallback else None)  # counts tokens here; the endpoint tokenizes its own
        self.transport = transport
        self.breaker = breaker
        self.policy = policy
        self.fallback = fallback
        self.max_sync_bytes = max_sync_bytes
        self.deferrer = deferrer  # when SLIMSERVE_ASYNC_BUCKET is set
        self.stats = RouterStats()
        self._sleep = sleep
        self._rng = rng or random.Random()

    @property
    def provider(self) -> str:
        # `/v2` lists execution providers; the one on this side is the fallback's, if any.
        return self.fallback.provider if self.fallback else f"remote:{self.transport.name}"

    def answer(self, inputs: dict[str, np.ndarray], *, may_defer: bool = False) -> tuple[dict[str, np.ndarray], dict]:
        started = time.monotonic()
        self.stats.add("requests")
        body, header_length = codec.encode_request(inputs)
        if len(body) > self.max_sync_bytes:
            return self._defer(body, header_length, may_defer)
        if not self.breaker.allow():
            self.stats.add("short_circuited")
            return self._degrade(inputs, f"circuit breaker {self.breaker.state}")
        try:
            outputs = self._decode(self._call(body, header_length, started))
        except EndpointRejected as exc:
            self.breaker.record_success()  # it answered: alive, and our caller's input was at fault
            self.stats.add("rejected")
            raise RejectedByEndpoint(f"endpoint {self.transport.name} rejected the input: {exc.message}") from None
        except EndpointFailure as exc:
            self.breaker.record_failure()
            self.stats.fail(exc.kind)
            return self._degrade(inputs, exc.reason)
        except BaseException as exc:
            # Whatever else ends the call (a bug, an interrupt) must still settle the breaker: a probe left
            # open would keep every later request from reaching the endpoint, for the life of the process.
            self.breaker.record_failure()
            self.stats.fail("error")
            if not isinstance(exc, Exception):
                raise
            log.exception("model %s: endpoint call failed unexpectedly", self.name)
            return self._degrade(inputs, f"unexpected {type(exc).__name__}")
        self.breaker.record_success()
        self.stats.add("answered")
        return outputs, {}

    def reset_after_restore(self) -> None:
        """After a SnapStart restore: the breaker's monotonic clock and the jitter's seed are not this
        environment's (shared/boot/snapstart.py)."""
        self.breaker = CircuitBreaker(self.breaker.threshold, self.breaker.cooldown_s)
        self._rng.seed(os.urandom(16))

    def _call(self, body: bytes, header_length: int, started: float) -> Reply:
        for retry in range(self.policy.retries + 1):
            self.stats.add("attempts")
            try:
                return self.transport.invoke(self.name, body, header_length)
            except EndpointFailure as exc:
                if not exc.retryable or retry == self.policy.retries:
                    raise
                wait = self.policy.backoff(retry, self._rng)
                if time.monotonic() - started + wait + self.policy.attempt_s > self.policy.deadline_s:
                    raise EndpointFailure(f"{exc.reason} (no time left for a retry)", kind=exc.kind) from None
                log.info("endpoint %s: %s; retry %d in %.3fs", self.transport.name, exc.reason, retry + 1, wait)
                self.stats.add("retries")
                self._sleep(wait)
        raise AssertionError("unreachable")

    def _decode(self, reply: Reply) -> dict[str, np.ndarray]:
        try:
            outputs = codec.decode_response(reply.body, reply.header_length)
        except SlimserveError as exc:
            raise EndpointFailure(f"endpoint answered something that is not an OIP v2 response: {exc.message}", kind="protocol") from None
        missing = [o.name for o in self.outputs if o.name not in outputs]
        if missing:
            raise EndpointFailure(f"endpoint's answer lacks output(s) {', '.join(missing)}", kind="protocol")
        return outputs

    def _degrade(self, inputs: dict[str, np.ndarray], reason: str) -> tuple[dict[str, np.ndarray], dict]:
        if self.fallback is not None:
            log.warning(
                "model %s: endpoint %s unavailable (%s); answering degraded from %s",
                self.name,
                self.transport.name,
                reason,
                self.fallback.manifest.model_file,
            )
            self.stats.add("degraded")
            return self.fallback.predict(inputs), dict(DEGRADED)
        self.stats.add("unavailable")
        log.warning("model %s: endpoint %s unavailable (%s); no local variant", self.name, self.transport.name, reason)
        raise EndpointUnavailable(
            f"model {self.name!r} runs on endpoint {self.transport.name}, which is unavailable ({reason}); "
            "this function has no local variant to answer with",
            retry_after_s=math.ceil(self.breaker.retry_after_s()),
        )

    def _defer(self, body: bytes, header_length: int, may_defer: bool):
        if self.deferrer is None or not may_defer:
            # Batch never defers: nothing would poll the job, and every redelivery would submit another.
            how = (
                "set SLIMSERVE_ASYNC_BUCKET for the asynchronous path"
                if may_defer
                else "batch runs synchronously: lower SLIMSERVE_BATCH_MAX_SIZE"
            )
            raise PayloadTooLarge(
                f"the request is {len(body)} bytes as binary tensors, over the endpoint's synchronous limit of "
                f"{self.max_sync_bytes} (SLIMSERVE_ENDPOINT_MAX_SYNC_BYTES); {how}"
            )
        self.stats.add("deferred")
        self.deferrer.submit(self.name, self.version, body, header_length)  # raises Deferred (202)

    def poll(self, inference_id: str) -> tuple[int, bytes, dict[str, str]]:
        if self.deferrer is None:
            raise NotFound(f"model {self.name!r} takes no asynchronous requests (SLIMSERVE_ASYNC_BUCKET is empty)")
        return self.deferrer.poll(self.name, inference_id)
