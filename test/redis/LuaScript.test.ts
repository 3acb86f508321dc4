/**
 * LuaScript against the real Redis (REDIS_URL; skipped without it): a
 * script runs by its SHA, and again after the server forgot it.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Redis } from "ioredis"
import * as LuaScript from "../../src/redis/LuaScript.js"

const url = process.env.REDIS_URL
const redis = new Redis(url ?? "redis://127.0.0.1:6379", { lazyConnect: true })
afterAll(() => redis.quit().catch(() => undefined))

describe.skipIf(url === undefined)("LuaScript", () => {
  it.live("runs by its SHA once the server has it, and sends itself again after SCRIPT FLUSH", () =>
    Effect.promise(async () => {
      const key = `effect-batch:test:lua:${process.pid}:${Date.now()}`
      // A script of its own (a comment with the key), so no other test has loaded it.
      const script = LuaScript.make(`-- ${key}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])`)
      expect(await redis.script("EXISTS", script.sha)).toEqual([0])
      expect(await LuaScript.run(redis, script, key, [2])).toBe(2)
      expect(await redis.script("EXISTS", script.sha)).toEqual([1])
      expect(await LuaScript.run(redis, script, key, [3])).toBe(5)
      await redis.script("FLUSH")
      expect(await LuaScript.run(redis, script, key, [4])).toBe(9)
      // Errors other than NOSCRIPT are not retried: they reach the caller.
      await expect(LuaScript.run(redis, LuaScript.make("return redis.call('NOSUCHCOMMAND')"), key, [])).rejects.toThrow(/Unknown Redis command|unknown command/i)
      await redis.del(key)
    }))
})
