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
      [503, "Transient"],
      [504, "Timeout"],
      [529, "Overloaded"]
    ]
    for (const [status, tag] of cases) expect([status, TaskError.fromHttpResponse(status)._tag]).toEqual([status, tag])
  })

  it("status 0 (no response: a network error) is Transient, and retried; 425 says too early", () => {
    for (const status of [0, -1, 99, Number.NaN]) {
      const error = TaskError.fromHttpResponse(status)
      expect(error._tag).toBe("Transient")
      expect(TaskError.isFinal(error._tag)).toBe(false)
    }
    expect(TaskError.fromHttpResponse(0).message).toBe("no HTTP response (status 0): network error")
    expect(TaskError.fromHttpResponse(425).message).toBe("HTTP 425: too early")
  })

  it("a retry-after known otherwise is used when the headers name none, never over them", () => {
    expect(ms(TaskError.retryAfter(TaskError.fromHttpResponse(429, {}, undefined, { retryAfter: "3 seconds" })))).toBe(3000)
    expect(ms(TaskError.retryAfter(TaskError.fromHttpResponse(429, { "retry-after": "1" }, undefined, { retryAfter: "3 seconds" }))))
      .toBe(1000)
  })

  it("a 503 is Overloaded (a drop for adaptive concurrency) only with an overload signal: a code or a wait", () => {
    expect(TaskError.fromHttpResponse(503).message).toBe("HTTP 503: service unavailable")
    expect(TaskError.fromHttpResponse(503, {}, { error: { code: "server_error", message: "try again" } })._tag).toBe("Transient")
    expect(TaskError.fromHttpResponse(503, {}, { error: { code: "overloaded" } })._tag).toBe("Overloaded")
    expect(TaskError.fromHttpResponse(503, { "retry-after": "2" })._tag).toBe("Overloaded")
    expect(TaskError.fromStatus({ status: 503, retryAfterMs: 100 })._tag).toBe("Overloaded")
    for (const status of [500, 502, 503]) expect(TaskError.isDrop(TaskError.fromHttpResponse(status)._tag)).toBe(false)
    expect(TaskError.fromHttpResponse(529)._tag).toBe("Overloaded")
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

describe("TaskError.fromStatus", () => {
  it("classifies a status with its wait, code and message, as a response with those would be", () => {
    const limited = TaskError.fromStatus({ status: 429, retryAfterMs: 1200 })
    expect(limited._tag).toBe("RateLimited")
    expect(ms(TaskError.retryAfter(limited))).toBe(1200)
    expect(TaskError.fromStatus({ status: 429, code: "insufficient_quota" })._tag).toBe("QuotaExhausted")
    const overloaded = TaskError.fromStatus({ status: 503, retryAfterMs: 0 })
    expect([overloaded._tag, ms(TaskError.retryAfter(overloaded))]).toEqual(["Overloaded", 0])
    const rejected = TaskError.fromStatus({ status: 400, message: "max_tokens is too large", code: "invalid_request" })
    expect(rejected).toMatchObject({ _tag: "Permanent", status: 400, code: "invalid_request", message: "HTTP 400: max_tokens is too large" })
    expect(TaskError.fromStatus({ status: 0, message: "socket hang up" }).message).toBe("no HTTP response (status 0): socket hang up")
    // A wait that is not a duration is no wait.
    expect(TaskError.retryAfter(TaskError.fromStatus({ status: 429, retryAfterMs: Number.NaN }))).toBeUndefined()
    expect(TaskError.retryAfter(TaskError.fromStatus({ status: 429, retryAfterMs: -5 }))).toBeUndefined()
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

  it("keeps a wait given as a field when the error has no headers (or headers without one)", () => {
    const cases: Array<[Record<string, unknown>, number]> = [
      [{ status: 429, retryAfterMs: 750 }, 750],
      [{ status: 429, retry_after_ms: 750 }, 750],
      [{ status: 429, retryAfter: 2 }, 2000],
      [{ status: 429, retryAfter: "3" }, 3000],
      [{ status: 429, retryAfter: Duration.seconds(4) }, 4000],
      [{ status: 503, retryAfterMs: 500, headers: {} }, 500],
      [{ response: { status: 429, headers: {} }, retryAfterMs: 600 }, 600]
    ]
    for (const [failure, wait] of cases) {
      const error = TaskError.classify(Object.assign(new Error("limited"), failure))
      expect([failure, ms(TaskError.retryAfter(error))]).toEqual([failure, wait])
    }
    // The headers' own wait comes first.
    expect(ms(TaskError.retryAfter(TaskError.classify({ status: 429, retryAfterMs: 750, headers: { "retry-after": "1" } })))).toBe(1000)
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
