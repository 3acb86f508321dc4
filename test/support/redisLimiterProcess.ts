/**
 * One process of the two-process RedisRateLimiter test:
 * `node --import tsx test/support/redisLimiterProcess.ts <redis url> <name> <calls>`
 * takes `calls` starts from a limiter of 20 requests/s shared under `name`,
 * all at once, and prints the times Redis scheduled them as one JSON array.
 */
import { Effect } from "effect"
import { Redis } from "ioredis"
import * as RedisRateLimiter from "../../src/redis/RedisRateLimiter.js"

const [url, name, calls] = process.argv.slice(2)
const redis = new Redis(url!)
const program = Effect.gen(function*() {
  const limiter = yield* RedisRateLimiter.make({ redis, name: name!, limits: { requestsPerSecond: 20 } })
  return yield* Effect.forEach(Array.from({ length: Number(calls) }), () => limiter.acquire(), { concurrency: "unbounded" })
})
const grants = await Effect.runPromise(program)
console.log(JSON.stringify(grants.map((grant) => grant.scheduledAt)))
await redis.quit()
