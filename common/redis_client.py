"""A Redis client that rides out a Redis restart, shared by the producer and the workers' job guard."""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry


def redis_client(url: str, outage_s: float = 300.0) -> redis.Redis:
    """Connection errors are retried with backoff for about `outage_s` before they surface."""
    backoff = ExponentialBackoff(cap=2.0, base=0.1)
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=30, socket_connect_timeout=5,
                                health_check_interval=30, retry=Retry(backoff, max(0, int(outage_s / 2.0))),
                                retry_on_error=[redis.ConnectionError, redis.TimeoutError])
