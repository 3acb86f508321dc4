import { describe, expect, it } from "@effect/vitest"
import { Cause, Duration, Schema } from "effect"
import * as TaskError from "../src/TaskError.js"

const ms = (d: Duration.Duration | undefined) => (d === undefined ? undefined : Duration.toMillis(d))

describe("TaskError.fromHttpResponse", () => {
  it("429 with retry-after seconds is RateLimited with that wait", () => {
    const error = TaskError.fromHttpResponse(429, { "retry-after": "20" })
    expect(error._tag).toBe("RateLimited")
    expect(ms(TaskError.retryAfter(error))).toBe(20_000)
  })

  it("prefers retry-after-ms over retry-after", () => {
    const error = TaskError.fromHttpResponse(429, { "Retry-After": "2", "retry-after-ms": "1500" })
    expect(ms(TaskError.retryAfter(error))).toBe(1500)
  })

  it("reads an HTTP-date retry-after relative to now", () => {
    const now = Date.parse("2026-11-23T10:00:00Z")
    const error = TaskError.fromHttpResponse(429, { "retry-after": "Mon, 23 Nov 2026 10:00:30 GMT" }, undefined, {
      nowMillis: now
    })
    expect(ms(TaskError.retryAfter(error))).toBe(30_000)
  })

  it("falls back to the x-ratelimit-reset of the exhausted limit", () => {
    const error = TaskError.fromHttpResponse(429, {
      "x-ratelimit-remaining-requests": "12",
      "x-ratelimit-reset-requests": "1s",
      "x-ratelimit-remaining-tokens": "0",
      "x-ratelimit-reset-tokens": "6m0s"
    })
    expect(ms(TaskError.retryAfter(error))).toBe(360_000)
  })

  it("reads WHATWG Headers", () => {
    const error = TaskError.fromHttpResponse(503, new Headers({ "Retry-After": "3" }))
    expect(error._tag).toBe("Overloaded")
    expect(ms(TaskError.retryAfter(error))).toBe(3000)
  })

  it("429 insufficient_quota is QuotaExhausted, from an object or JSON text body", () => {
    const body = { error: { message: "You exceeded your current quota", type: "insufficient_quota", code: "insufficient_quota" } }
    expect(TaskError.fromHttpResponse(429, {}, body)._tag).toBe("QuotaExhausted")
    expect(TaskError.fromHttpResponse(429, {}, JSON.stringify(body))._tag).toBe("QuotaExhausted")
  })

  it("maps statuses onto classes", () => {
    const cases: Array<[number, TaskError.Tag]> = [
      [400, "Permanent"],
      [401, "Permanent"],
      [404, "Permanent"],
      [408, "Timeout"],
      [422, "Permanent"],
      [425, "Transient"],
      [500, "Transient"],
      [502, "Transient"],
      [503, "Overloaded"],
      [504, "Timeout"],
      [529, "Overloaded"]
    ]
    for (const [status, tag] of cases) expect([status, TaskError.fromHttpResponse(status)._tag]).toEqual([status, tag])
  })

  it("an overload code wins over a generic status", () => {
    expect(TaskError.fromHttpResponse(500, {}, { type: "error", error: { type: "overloaded_error" } })._tag)
      .toBe("Overloaded")
  })

  it("never reads the message text", () => {
    const error = TaskError.fromHttpResponse(400, {}, { error: { message: "rate limit exceeded, quota exhausted" } })
    expect(error._tag).toBe("Permanent")
    expect(error.message).toContain("rate limit exceeded")
  })
})

describe("TaskError.parseResetDuration", () => {
  it("parses provider reset formats", () => {
    expect(ms(TaskError.parseResetDuration("1s"))).toBe(1000)
    expect(ms(TaskError.parseResetDuration("20ms"))).toBe(20)
    expect(ms(TaskError.parseResetDuration("6m0s"))).toBe(360_000)
    expect(ms(TaskError.parseResetDuration("1h2m3.5s"))).toBe(3_723_500)
    expect(ms(TaskError.parseResetDuration("2.5"))).toBe(2500)
    expect(TaskError.parseResetDuration("soon")).toBeUndefined()
    expect(TaskError.parseResetDuration("1s junk")).toBeUndefined()
  })
})

describe("TaskError.classify", () => {
  it("keeps a TaskError as it is", () => {
    const error = new TaskError.Permanent({ message: "no" })
    expect(TaskError.classify(error)).toBe(error)
  })

  it("rebuilds a TaskError that crossed JSON", () => {
    const encoded = Schema.encodeSync(TaskError.TaskError)(new TaskError.RateLimited({ retryAfter: Duration.seconds(4) }))
    const json = JSON.parse(JSON.stringify(encoded))
    const error = TaskError.classify(json)
    expect(error).toBeInstanceOf(TaskError.RateLimited)
    expect(ms(TaskError.retryAfter(error))).toBe(4000)
  })

  it("classifies an @effect/platform ResponseError-like failure by its response", () => {
    const failure = { _tag: "ResponseError", reason: "StatusCode", response: { status: 429, headers: { "retry-after": "7" } } }
    const error = TaskError.classify(failure)
    expect(error._tag).toBe("RateLimited")
    expect(ms(TaskError.retryAfter(error))).toBe(7000)
  })

  it("classifies SDK-style errors with a status and code", () => {
    const failure = Object.assign(new Error("quota"), { status: 429, code: "insufficient_quota", headers: {} })
    expect(TaskError.classify(failure)._tag).toBe("QuotaExhausted")
  })

  it("a transport RequestError and Node network codes are Transient", () => {
    expect(TaskError.classify({ _tag: "RequestError", reason: "Transport", message: "socket hang up" })._tag)
      .toBe("Transient")
    expect(TaskError.classify(Object.assign(new Error("reset"), { code: "ECONNRESET" }))._tag).toBe("Transient")
  })

  it("a TimeoutException is a Timeout", () => {
    expect(TaskError.classify(new Cause.TimeoutException())._tag).toBe("Timeout")
  })

  it("anything unrecognised is Transient, keeping the original as cause", () => {
    const error = TaskError.classify("weird")
    expect(error._tag).toBe("Transient")
    expect(error._tag === "Transient" && error.cause).toBe("weird")
  })
})
