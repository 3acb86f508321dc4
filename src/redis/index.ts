/**
 * effect-batch's state shared through Redis, for several processes working
 * for one provider: `RedisRateLimiter`, one set of rate limits and one
 * cooldown gate for all of them; `RedisConcurrencyLimiter`, one limit on
 * the calls in flight over all of them.
 *
 * Needs `ioredis` (5.x), on top of the core (`effect-batch`).
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as RedisRateLimiter from "./RedisRateLimiter.js"
/** @since 0.1.0 */
export * as RedisConcurrencyLimiter from "./RedisConcurrencyLimiter.js"
