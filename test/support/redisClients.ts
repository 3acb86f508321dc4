/**
 * Redis connections for tests against the machine's Redis (REDIS_URL), each
 * closed after the file's tests, and names no other test run uses.
 */
import { afterAll } from "@effect/vitest"
import { Redis, type RedisOptions } from "ioredis"

export const url = process.env.REDIS_URL

const clients: Array<Redis> = []

/** A new connection (lazily connected) to `to` (default: the test Redis), closed after the file's tests. */
export const connect = (to?: string, options: RedisOptions = {}): Redis => {
  const client = new Redis(to ?? url ?? "redis://127.0.0.1:6379", { lazyConnect: true, ...options })
  clients.push(client)
  return client
}

afterAll(async () => {
  await Promise.all(clients.map((client) => client.quit().catch(() => undefined)))
})

let names = 0
/** A limiter name unique to this test run. */
export const uniqueName = (): string => `test-${process.pid}-${Date.now()}-${names++}`
