"""Rate limits per client address and per user, and login throttling; counters in Redis, else in memory.

- stores.py: the counters and the atomic steps on them (GCRA; login reservations), in memory and in Redis, and
  the fallback from one to the other. No framework.
- policies.py: what is counted and what a count means (RateLimiter, LoginThrottle). No framework.
- extensions.py: the nameko dependencies the gateway service declares (RateLimit, LoginGuard) on one LimitStore
  per container, and the 429 answer.

Counters live in Redis at `REDIS_URL` (shared by every gateway instance). Without it, or while Redis does not
answer, each instance counts in its own memory (said in the log at start, and when Redis fails or comes back),
and Redis is tried again every `REDIS_RETRY_SECONDS`. docs/HTTP-SECURITY.md has the rules and the numbers.
"""
