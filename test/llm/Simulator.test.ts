import { HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Duration, Effect, Exit, FastCheck, Fiber, Layer, Option, Schema, TestClock } from "effect"
import * as model from "../../src/llm/internal/simulatorModel.js"
import * as Simulator from "../../src/llm/Simulator.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import * as TaskError from "../../src/TaskError.js"

// ---------------------------------------------------------------------------
// harness: a real simulator on a random loopback port, called with undici
// ---------------------------------------------------------------------------

const withSimulator = <A, E>(
  options: Simulator.Options,
  f: (sim: Simulator.Service) => Effect.Effect<A, E, HttpClient.HttpClient>
) =>
  Effect.flatMap(Simulator.Simulator, f).pipe(
    Effect.provide(Layer.mergeAll(
      SimulatorServer.layer(options),
      NodeHttpClient.layerUndici
    ))
  )

interface Reply {
  readonly status: number
  readonly headers: Readonly<Record<string, string | undefined>>
  readonly body: unknown
  /** Client-side latency. */
  readonly ms: number
}

const send = (request: HttpClientRequest.HttpClientRequest): Effect.Effect<Reply, never, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const client = yield* HttpClient.HttpClient
    const started = performance.now()
    const response = yield* client.execute(request)
    const text = yield* response.text
    const body: unknown = text === "" ? undefined : JSON.parse(text)
    return { status: response.status, headers: response.headers, body, ms: performance.now() - started }
  }).pipe(Effect.orDie)

const chat = (
  sim: Simulator.Service,
  content: string,
  extra: Record<string, unknown> = {},
  headers: Record<string, string> = {}
) =>
  send(HttpClientRequest.post(`${sim.url}/v1/chat/completions`).pipe(
    HttpClientRequest.setHeaders(headers),
    HttpClientRequest.bodyUnsafeJson({ model: "sim-chat", messages: [{ role: "user", content }], ...extra })
  ))

const embed = (sim: Simulator.Service, body: Record<string, unknown>) =>
  send(HttpClientRequest.post(`${sim.url}/v1/embeddings`).pipe(HttpClientRequest.bodyUnsafeJson({ model: "sim-embed", ...body })))

const get = (sim: Simulator.Service, path: string) => send(HttpClientRequest.get(`${sim.url}${path}`))

const strict = { onExcessProperty: "error" } as const

const ChatCompletion = Schema.Struct({
  id: Schema.String,
  object: Schema.Literal("chat.completion"),
  created: Schema.Int,
  model: Schema.String,
  choices: Schema.Tuple(Schema.Struct({
    index: Schema.Literal(0),
    message: Schema.Struct({ role: Schema.Literal("assistant"), content: Schema.String }),
    finish_reason: Schema.Literal("stop", "length")
  })),
  usage: Schema.Struct({ prompt_tokens: Schema.Int, completion_tokens: Schema.Int, total_tokens: Schema.Int })
})
const completionOf = (reply: Reply) => {
  expect(reply.status).toBe(200)
  return Schema.decodeUnknownSync(ChatCompletion, strict)(reply.body)
}

const Embeddings = Schema.Struct({
  object: Schema.Literal("list"),
  data: Schema.Array(Schema.Struct({
    object: Schema.Literal("embedding"),
    index: Schema.Int,
    embedding: Schema.Union(Schema.Array(Schema.Number), Schema.String)
  })),
  model: Schema.String,
  usage: Schema.Struct({ prompt_tokens: Schema.Int, total_tokens: Schema.Int })
})

const ErrorBody = Schema.Struct({ error: Schema.Struct({ message: Schema.String, type: Schema.String, code: Schema.String }) })
const errorOf = (reply: Reply) => Schema.decodeUnknownSync(ErrorBody, strict)(reply.body).error

const MetricsBody = Schema.Struct({
  received: Schema.Int,
  byStatus: Schema.Record({ key: Schema.String, value: Schema.Int }),
  inFlight: Schema.Int,
  peakInFlight: Schema.Int,
  queued: Schema.Int,
  peakQueued: Schema.Int,
  promptTokens: Schema.Int,
  completionTokens: Schema.Int,
  timeline: Schema.Array(Schema.Struct({
    t: Schema.Int,
    received: Schema.Int,
    completed: Schema.Int,
    byStatus: Schema.Record({ key: Schema.String, value: Schema.Int }),
    peakInFlight: Schema.Int
  })),
  batches: Schema.Struct({
    uploads: Schema.Int,
    created: Schema.Int,
    linesBilled: Schema.Int,
    billedTwice: Schema.Record({ key: Schema.String, value: Schema.Int })
  })
})

const statuses = (replies: ReadonlyArray<Reply>) => replies.map((r) => r.status)

const fast = { latency: { baseMs: 2 } } as const

/** Waits on the wall clock, also under the TestClock (where a request's trip through the sockets still takes real time). */
const realSleep = (ms: number) => Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, ms)))

/** The replies of `fibers` once at least `count` of them are done, polling on the wall clock (sorted by status). */
const settledWhenReal = (fibers: ReadonlyArray<Fiber.RuntimeFiber<Reply>>, count: number) =>
  Effect.gen(function*() {
    for (let i = 0; ; i++) {
      const polled = yield* Effect.forEach(fibers, Fiber.poll)
      const done = polled.flatMap((exit) => (Option.isSome(exit) && Exit.isSuccess(exit.value) ? [exit.value.value] : []))
      if (done.length >= count || i >= 400) return done.sort((a, b) => a.status - b.status)
      yield* realSleep(5)
    }
  })

/** Polls `metrics` on the wall clock until `done` holds (the server learns of a request or an abort asynchronously). */
const metricsWhenReal = (sim: Simulator.Service, done: (m: Simulator.Metrics) => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200; i++) {
      const m = yield* sim.metrics
      if (done(m)) return m
      yield* realSleep(5)
    }
    return yield* sim.metrics
  })

// ---------------------------------------------------------------------------
// the model
// ---------------------------------------------------------------------------

describe("Simulator model", () => {
  it("formatDuration writes OpenAI's reset durations", () => {
    expect(model.formatDuration(0)).toBe("0s")
    expect(model.formatDuration(0.4)).toBe("0s")
    expect(model.formatDuration(20)).toBe("20ms")
    expect(model.formatDuration(999.6)).toBe("1s")
    expect(model.formatDuration(1000)).toBe("1s")
    expect(model.formatDuration(1500)).toBe("1.5s")
    expect(model.formatDuration(8640)).toBe("8.64s")
    expect(model.formatDuration(360_000)).toBe("6m0s")
    expect(model.formatDuration(3_723_500)).toBe("1h2m3.5s")
    expect(model.formatDuration(7_200_000)).toBe("2h0m0s")
  })

  it.prop("formatDuration round-trips through TaskError.parseResetDuration", [FastCheck.integer({ min: 0, max: 500_000_000 })], ([ms]) => {
    expect(Duration.toMillis(TaskError.parseResetDuration(model.formatDuration(ms))!)).toBe(ms)
  })

  it("TokenBucket: starts full, refills continuously, reports remaining and reset", () => {
    const bucket = new model.TokenBucket(600, 1000, 0) // 10 requests, one per 100 ms
    expect(bucket.capacity).toBeCloseTo(10)
    for (let i = 0; i < 10; i++) {
      expect(bucket.waitMillis(1)).toBe(0)
      bucket.take(1)
    }
    expect(bucket.remaining).toBe(0)
    expect(bucket.waitMillis(1)).toBeCloseTo(100)
    expect(bucket.resetMillis).toBeCloseTo(1000)
    bucket.refill(40)
    expect(bucket.waitMillis(1)).toBeCloseTo(60)
    bucket.refill(100)
    expect(bucket.waitMillis(1)).toBe(0)
    expect(bucket.remaining).toBe(1)
    bucket.refill(60_000)
    expect(bucket.level).toBeCloseTo(10) // never above capacity
    expect(bucket.resetMillis).toBe(0)
  })

  it("TokenBucket: a cost above capacity waits for a full bucket, then leaves it in debt", () => {
    const bucket = new model.TokenBucket(60, 1000, 0) // holds 1 unit, refills 1 per second
    expect(bucket.waitMillis(5)).toBe(0)
    bucket.take(5)
    expect(bucket.remaining).toBe(0)
    expect(bucket.waitMillis(1)).toBeCloseTo(5000)
    const resized = bucket.resize(120, 1000, 1000) // keeps its (negative) level, refills at the new rate
    expect(resized.level).toBeCloseTo(-3)
    expect(resized.waitMillis(1)).toBeCloseTo(2000)
  })

  it.prop(
    "TokenBucket: admits at most capacity + rate × t in any interval",
    {
      perMinute: FastCheck.integer({ min: 60, max: 60_000 }),
      bucketMs: FastCheck.integer({ min: 50, max: 5000 }),
      arrivals: FastCheck.array(FastCheck.tuple(FastCheck.integer({ min: 0, max: 200 }), FastCheck.integer({ min: 1, max: 5 })), {
        maxLength: 200
      })
    },
    ({ arrivals, bucketMs, perMinute }) => {
      const bucket = new model.TokenBucket(perMinute, bucketMs, 0)
      const admitted: Array<readonly [number, number]> = []
      let at = 0
      for (const [gap, cost] of arrivals) {
        at += gap
        bucket.refill(at)
        const units = Math.min(cost, bucket.capacity) // costs above capacity are admitted on a full bucket
        if (bucket.waitMillis(units) === 0) {
          bucket.take(units)
          admitted.push([at, units])
        }
      }
      for (let i = 0; i < admitted.length; i++) {
        let used = 0
        for (let j = i; j < admitted.length; j++) {
          used += admitted[j]![1]
          expect(used).toBeLessThanOrEqual(bucket.capacity + (bucket.perMs * (admitted[j]![0] - admitted[i]![0])) + 1e-6)
        }
      }
    }
  )

  it("mulberry32 and hash32 are deterministic and seed-dependent", () => {
    const a = model.mulberry32(42)
    const b = model.mulberry32(42)
    const xs = Array.from({ length: 5 }, () => a())
    expect(Array.from({ length: 5 }, () => b())).toEqual(xs)
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true)
    expect(new Set(xs).size).toBe(5)
    expect(model.mulberry32(43)()).not.toBe(xs[0])
    expect(model.hash32(42, "sim-chat\u0000hello")).toBe(model.hash32(42, "sim-chat\u0000hello"))
    expect(model.hash32(42, "sim-chat\u0000hello")).not.toBe(model.hash32(7, "sim-chat\u0000hello"))
    expect(model.hash32(42, "sim-chat\u0000hello")).not.toBe(model.hash32(42, "sim-chat\u0000hellp"))
  })

  it("the lognormal multiplier has mean 1 and spreads with σ", () => {
    const random = model.mulberry32(1)
    const draws = Array.from({ length: 40_000 }, () => model.lognormalMultiplier(0.5, random))
    const mean = draws.reduce((s, x) => s + x, 0) / draws.length
    expect(mean).toBeGreaterThan(0.98)
    expect(mean).toBeLessThan(1.02)
    expect(Math.min(...draws)).toBeLessThan(0.5)
    expect(Math.max(...draws)).toBeGreaterThan(2)
    expect(model.lognormalMultiplier(0, random)).toBe(1)
  })

  it("answerText has exactly the asked number of words and mentions the prompt", () => {
    const text = model.answerText("What is the capital of France?", 30, model.mulberry32(3))
    expect(text.split(" ")).toHaveLength(30)
    expect(text.startsWith("Regarding What is the capital of France?:")).toBe(true)
    expect(model.answerText("What is the capital of France?", 3, model.mulberry32(3))).toBe("Regarding What is")
  })
})

// ---------------------------------------------------------------------------
// the server
// ---------------------------------------------------------------------------

describe("Simulator", () => {
  it.live("chat completion: OpenAI's body shape, usage, deterministic per prompt and seed", () =>
    withSimulator(fast, (sim) =>
      Effect.gen(function*() {
        expect(sim.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
        const prompt = "Hello there, what is the capital of France?" // 43 chars: 11 tokens + 4
        const first = completionOf(yield* chat(sim, prompt))
        expect(first.id).toBe("chatcmpl-sim-1")
        expect(first.model).toBe("sim-chat")
        expect(first.choices[0].finish_reason).toBe("stop")
        expect(first.usage.prompt_tokens).toBe(15)
        expect(first.usage.completion_tokens).toBeGreaterThanOrEqual(10)
        expect(first.usage.completion_tokens).toBeLessThanOrEqual(60)
        expect(first.usage.total_tokens).toBe(first.usage.prompt_tokens + first.usage.completion_tokens)
        expect(first.choices[0].message.content.split(" ")).toHaveLength(first.usage.completion_tokens)
        expect(first.choices[0].message.content).toContain("Hello there, what is the capital")
        expect(Math.abs(first.created - Date.now() / 1000)).toBeLessThan(5)

        // Another prompt in between does not change the answer: it derives from (seed, model, prompt).
        const other = completionOf(yield* chat(sim, "Something else entirely"))
        expect(other.choices[0].message.content).not.toBe(first.choices[0].message.content)
        const again = completionOf(yield* chat(sim, prompt))
        expect(again.id).toBe("chatcmpl-sim-3")
        expect(again.choices[0].message.content).toBe(first.choices[0].message.content)
        expect(again.usage).toEqual(first.usage)

        // max_tokens caps the completion and says so.
        const capped = completionOf(yield* chat(sim, prompt, { max_tokens: 5 }))
        expect(capped.usage.completion_tokens).toBe(5)
        expect(capped.choices[0].finish_reason).toBe("length")
        expect(capped.choices[0].message.content).toBe(first.choices[0].message.content.split(" ").slice(0, 5).join(" "))

        // A different seed gives a different answer to the same prompt.
        yield* sim.configure({ seed: 7 })
        const reseeded = completionOf(yield* chat(sim, prompt))
        expect(reseeded.choices[0].message.content).not.toBe(first.choices[0].message.content)
        expect(reseeded.usage.prompt_tokens).toBe(15)
      })))

  it.live("chat completion: the same seed gives the same answers on another simulator", () =>
    Effect.gen(function*() {
      const answers = (seed: number) =>
        withSimulator({ ...fast, seed }, (sim) =>
          Effect.forEach(["one", "two two", "three three three"], (p) => Effect.map(chat(sim, p), completionOf)))
      const a = yield* answers(11)
      const b = yield* answers(11)
      const c = yield* answers(12)
      expect(b.map((x) => x.choices[0].message.content)).toEqual(a.map((x) => x.choices[0].message.content))
      expect(b.map((x) => x.usage)).toEqual(a.map((x) => x.usage))
      expect(c.map((x) => x.choices[0].message.content)).not.toEqual(a.map((x) => x.choices[0].message.content))
    }))

  it.live("embeddings: one unit vector per input, in order, with the asked dimensions", () =>
    withSimulator(fast, (sim) =>
      Effect.gen(function*() {
        const reply = yield* embed(sim, { input: ["alpha", "beta beta", "alpha"] })
        expect(reply.status).toBe(200)
        const body = Schema.decodeUnknownSync(Embeddings, strict)(reply.body)
        expect(body.model).toBe("sim-embed")
        expect(body.data.map((d) => d.index)).toEqual([0, 1, 2])
        const vectors = body.data.map((d) => d.embedding as ReadonlyArray<number>)
        for (const v of vectors) {
          expect(v).toHaveLength(8)
          expect(Math.hypot(...v)).toBeCloseTo(1, 9)
        }
        expect(vectors[2]).toEqual(vectors[0])
        expect(vectors[1]).not.toEqual(vectors[0])
        expect(body.usage).toEqual({ prompt_tokens: 2 + 3 + 2, total_tokens: 7 })

        const single = Schema.decodeUnknownSync(Embeddings)((yield* embed(sim, { input: "alpha", dimensions: 32 })).body)
        expect(single.data).toHaveLength(1)
        expect(single.data[0]!.embedding).toHaveLength(32)

        // base64 is the float32 vector, as the OpenAI SDKs ask for by default.
        const b64 = Schema.decodeUnknownSync(Embeddings)((yield* embed(sim, { input: ["alpha"], encoding_format: "base64" })).body)
        const bytes = Buffer.from(b64.data[0]!.embedding as string, "base64")
        const floats = Array.from(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4))
        expect(floats).toHaveLength(8)
        floats.forEach((x, i) => expect(x).toBeCloseTo(vectors[0]![i]!, 6))
      })))

  it.live("GET /v1/models lists the configured models; unknown routes are a JSON 404", () =>
    withSimulator(fast, (sim) =>
      Effect.gen(function*() {
        const reply = yield* get(sim, "/v1/models")
        expect(reply.status).toBe(200)
        expect(reply.body).toEqual({
          object: "list",
          data: [
            { id: "sim-chat", object: "model", created: 1_700_000_000, owned_by: "effect-batch-simulator" },
            { id: "sim-embed", object: "model", created: 1_700_000_000, owned_by: "effect-batch-simulator" }
          ]
        })
        yield* sim.configure({ models: ["gpt-sim"] })
        expect((yield* get(sim, "/v1/models")).body).toMatchObject({ data: [{ id: "gpt-sim" }] })
        const missing = yield* get(sim, "/v1/nothing")
        expect(missing.status).toBe(404)
        expect(errorOf(missing)).toMatchObject({ type: "invalid_request_error", code: "unknown_url" })
        expect((yield* sim.metrics).received).toBe(0) // only the API endpoints count
      })))

  // These two run on the TestClock: the service times are the simulator's clock, so "answered at once" and "waited
  // for the pair before" are asserted as what happened before and after each step of the clock, not as wall-clock
  // durations a busy machine stretches.
  it.effect("capacity 2 + maxQueue 2: of 6 concurrent requests 2 are served, 2 wait, 2 get 503 overloaded at once", () =>
    withSimulator({ capacity: 2, maxQueue: 2, latency: { baseMs: 150 } }, (sim) =>
      Effect.gen(function*() {
        const fibers = yield* Effect.forEach([1, 2, 3, 4, 5, 6], (i) => Effect.fork(chat(sim, `question ${i}`)))
        // Before the clock moves at all, two requests hold the slots, two wait, and two are answered.
        const answered = yield* settledWhenReal(fibers, 2)
        expect(statuses(answered)).toEqual([503, 503])
        for (const r of answered) {
          expect(errorOf(r)).toMatchObject({ type: "overloaded_error", code: "overloaded" })
          expect(TaskError.fromHttpResponse(r.status, r.headers, r.body)._tag).toBe("Overloaded")
        }
        expect(yield* sim.metrics).toMatchObject({ inFlight: 2, queued: 2 })
        yield* TestClock.adjust("150 millis") // the first pair is served; the queued pair takes the slots
        expect(statuses(yield* settledWhenReal(fibers, 4))).toEqual([200, 200, 503, 503])
        expect(yield* sim.metrics).toMatchObject({ inFlight: 2, queued: 0 })
        yield* TestClock.adjust("149 millis")
        yield* realSleep(30)
        expect(yield* sim.metrics).toMatchObject({ inFlight: 2 }) // the queued pair's 150 ms started at 150, not 0
        yield* TestClock.adjust("1 millis")
        expect(statuses(yield* settledWhenReal(fibers, 6))).toEqual([200, 200, 200, 200, 503, 503])
        const m = yield* sim.metrics
        expect(m.peakInFlight).toBe(2)
        expect(m.peakQueued).toBe(2)
        expect(m.inFlight).toBe(0)
        expect(m.byStatus).toEqual({ 200: 4, 503: 2 })
        expect(Math.max(...m.timeline.map((s) => s.peakInFlight))).toBe(2)
      })))

  it.effect("below the queue limit requests wait in FIFO order and their latency grows with load", () =>
    withSimulator({ capacity: 1, latency: { baseMs: 40 } }, (sim) =>
      Effect.gen(function*() {
        // One at a time, so that they arrive in this order.
        const fibers: Array<Fiber.RuntimeFiber<Reply>> = []
        for (const i of [1, 2, 3, 4]) {
          fibers.push(yield* Effect.fork(chat(sim, `q${i}`)))
          yield* metricsWhenReal(sim, (m) => m.inFlight + m.queued === i)
        }
        // Each 40 ms of the simulator's clock serves the next one in arrival order.
        for (let served = 1; served <= 4; served++) {
          yield* TestClock.adjust("40 millis")
          const done = yield* settledWhenReal(fibers, served)
          expect(statuses(done)).toEqual(Array(served).fill(200))
          expect(yield* Effect.forEach(fibers.slice(0, served), (f) => Effect.map(Fiber.poll(f), Option.isSome))).toEqual(
            Array(served).fill(true)
          )
        }
        const m = yield* sim.metrics
        expect(m.peakInFlight).toBe(1)
        expect(m.peakQueued).toBe(3)
      })))

  it.live("rateLimitHeaders: false sends no x-ratelimit-* headers; a 429 still says when to come back", () =>
    withSimulator({ requestsPerMinute: 60, bucketMs: 1000, rateLimitHeaders: false, latency: { baseMs: 0 } }, (sim) =>
      Effect.gen(function*() {
        const ok = yield* chat(sim, "first")
        const limited = yield* chat(sim, "second")
        expect([ok.status, limited.status]).toEqual([200, 429])
        for (const reply of [ok, limited]) {
          expect(Object.keys(reply.headers).filter((name) => name.startsWith("x-ratelimit-"))).toEqual([])
        }
        expect(Number(limited.headers["retry-after-ms"])).toBeGreaterThan(0)
        expect(limited.headers["retry-after"]).toBe("1")
      })))

  // On the TestClock: ten requests in a row take no time at all, so no token refills between them however slow the
  // machine is (on the wall clock this test once failed under load, a token refilled during the ten).
  it.effect("RPM bucket: 600 RPM in a 1000 ms bucket admits 10 at once, then 429 with the wait until the next fits", () =>
    withSimulator({ requestsPerMinute: 600, bucketMs: 1000, latency: { baseMs: 0 } }, (sim) =>
      Effect.gen(function*() {
        yield* get(sim, "/v1/models")
        const ok: Array<Reply> = []
        for (let i = 0; i < 10; i++) ok.push(yield* chat(sim, `q${i}`))
        expect(statuses(ok)).toEqual(Array(10).fill(200))
        expect(ok.map((r) => r.headers["x-ratelimit-limit-requests"])).toEqual(Array(10).fill("600"))
        expect(ok.map((r) => r.headers["x-ratelimit-remaining-requests"])).toEqual(["9", "8", "7", "6", "5", "4", "3", "2", "1", "0"])
        expect(ok[0]!.headers["x-ratelimit-reset-requests"]).toBe("100ms")
        expect(ok[0]!.headers["x-ratelimit-limit-tokens"]).toBeUndefined()
        expect(ok[0]!.headers["x-request-id"]).toMatch(/^req_sim_\d+$/)

        const limited = yield* chat(sim, "eleventh")
        expect(limited.status).toBe(429)
        expect(errorOf(limited)).toMatchObject({ type: "requests", code: "rate_limit_exceeded" })
        expect(errorOf(limited).message).toMatch(/^Rate limit reached for requests/)
        const retryAfterMs = Number(limited.headers["retry-after-ms"])
        expect(retryAfterMs).toBe(100) // one request per 100 ms refills
        expect(limited.headers["retry-after"]).toBe("1")
        expect(limited.headers["x-ratelimit-limit-requests"]).toBe("600")
        expect(limited.headers["x-ratelimit-remaining-requests"]).toBe("0")
        expect(Duration.toMillis(TaskError.parseResetDuration(limited.headers["x-ratelimit-reset-requests"]!)!)).toBe(1000)
        const classified = TaskError.fromHttpResponse(limited.status, limited.headers, limited.body)
        expect(classified._tag).toBe("RateLimited")
        expect(Duration.toMillis(TaskError.retryAfter(classified)!)).toBe(retryAfterMs)

        // Waiting exactly retry-after-ms is enough; nothing was deducted for the 429.
        yield* TestClock.adjust(Duration.millis(retryAfterMs))
        const after = yield* chat(sim, "after the wait")
        expect(after.status).toBe(200)
        expect(after.headers["x-ratelimit-remaining-requests"]).toBe("0")
        expect((yield* sim.metrics).byStatus).toEqual({ 200: 11, 429: 1 })
      })))

  it.live("TPM bucket: max_tokens is charged at admission, not the tokens used", () =>
    withSimulator({ tokensPerMinute: 6000, bucketMs: 1000, latency: { baseMs: 0 } }, (sim) =>
      Effect.gen(function*() {
        // 100 tokens in the bucket. "hi" is 1 + 4 prompt tokens; max_tokens 80 charges 85 though ≤ 60 are produced.
        const first = yield* chat(sim, "hi", { max_tokens: 80 })
        expect(completionOf(first).usage.total_tokens).toBeLessThanOrEqual(65)
        expect(first.headers["x-ratelimit-limit-tokens"]).toBe("6000")
        expect(first.headers["x-ratelimit-remaining-tokens"]).toBe("15")
        expect(first.headers["x-ratelimit-limit-requests"]).toBeUndefined()

        const second = yield* chat(sim, "hi", { max_tokens: 80 })
        expect(second.status).toBe(429)
        expect(errorOf(second)).toMatchObject({ type: "tokens", code: "rate_limit_exceeded" })
        expect(errorOf(second).message).toMatch(/^Rate limit reached for tokens/)
        // 70 tokens missing at 0.1 token/ms.
        expect(Number(second.headers["retry-after-ms"])).toBeGreaterThan(650)
        expect(Number(second.headers["retry-after-ms"])).toBeLessThanOrEqual(700)

        // Without max_tokens the charge is prompt + the completion it produces.
        yield* sim.reset
        const third = yield* chat(sim, "hi")
        const usage = completionOf(third).usage
        expect(third.headers["x-ratelimit-remaining-tokens"]).toBe(String(100 - usage.total_tokens))
      })))

  // On the TestClock, where a 300 ms service time never passes unless the test moves the clock: answered at all is
  // answered at once.
  it.effect("INVALID in a prompt or an embedding input is a 400 invalid_prompt, answered at once", () =>
    withSimulator({ latency: { baseMs: 300 } }, (sim) =>
      Effect.gen(function*() {
        const replies = [
          yield* chat(sim, "please answer this INVALID question"),
          yield* embed(sim, { input: ["fine", "also INVALID"] })
        ]
        for (const reply of replies) {
          expect(reply.status).toBe(400)
          expect(errorOf(reply)).toMatchObject({ type: "invalid_request_error", code: "invalid_prompt" })
          expect(TaskError.fromHttpResponse(reply.status, reply.headers, reply.body)._tag).toBe("Permanent")
        }
      })))

  it.live("quota: once the tokens are spent every request gets 429 insufficient_quota without retry-after", () =>
    withSimulator(fast, (sim) =>
      Effect.gen(function*() {
        const first = completionOf(yield* chat(sim, "hi"))
        yield* sim.configure({ quotaTokens: first.usage.total_tokens + 1 }) // one token left: still admitted
        expect((yield* chat(sim, "hi")).status).toBe(200)
        for (const reply of [yield* chat(sim, "hi"), yield* embed(sim, { input: "x" })]) {
          expect(reply.status).toBe(429)
          expect(errorOf(reply)).toMatchObject({ type: "insufficient_quota", code: "insufficient_quota" })
          expect(reply.headers["retry-after"]).toBeUndefined()
          expect(reply.headers["retry-after-ms"]).toBeUndefined()
          expect(TaskError.fromHttpResponse(reply.status, reply.headers, reply.body)._tag).toBe("QuotaExhausted")
        }
        yield* sim.reset // forgets the quota spent
        expect((yield* chat(sim, "hi")).status).toBe(200)
        expect((yield* chat(sim, "hi")).status).toBe(200)
        yield* sim.configure({ quotaTokens: 2 * first.usage.total_tokens }) // exactly spent
        expect((yield* chat(sim, "hi")).status).toBe(429)
      })))

  it.live("failureRate 1: every request fails after its service time with 500, 502 or 503 server_error", () =>
    withSimulator({ latency: { baseMs: 20 }, failureRate: 1 }, (sim) =>
      Effect.gen(function*() {
        const replies = yield* Effect.forEach(Array.from({ length: 15 }, (_, i) => i), (i) => chat(sim, `q${i}`), {
          concurrency: 5
        })
        for (const reply of replies) {
          expect([500, 502, 503]).toContain(reply.status)
          expect(errorOf(reply)).toMatchObject({ type: "server_error", code: "server_error" })
          expect(errorOf(reply).message.toLowerCase()).not.toContain("overload")
          expect(reply.ms).toBeGreaterThanOrEqual(19)
        }
        expect(new Set(statuses(replies)).size).toBeGreaterThanOrEqual(2)
        const m = yield* sim.metrics
        expect(m.promptTokens).toBe(0) // failed calls are not billed
        expect((m.byStatus["500"] ?? 0) + (m.byStatus["502"] ?? 0) + (m.byStatus["503"] ?? 0)).toBe(15)
      })))

  it.live("apiKey: requests without the right bearer token get 401 invalid_api_key", () =>
    withSimulator({ ...fast, apiKey: "sk-sim" }, (sim) =>
      Effect.gen(function*() {
        const none = yield* chat(sim, "hi")
        const wrong = yield* chat(sim, "hi", {}, { authorization: "Bearer sk-other" })
        const right = yield* chat(sim, "hi", {}, { authorization: "Bearer sk-sim" })
        const models = yield* get(sim, "/v1/models")
        for (const reply of [none, wrong, models]) {
          expect(reply.status).toBe(401)
          expect(errorOf(reply)).toMatchObject({ type: "invalid_request_error", code: "invalid_api_key" })
        }
        expect(right.status).toBe(200)
        // Auth comes before the body is even read.
        const garbage = yield* send(HttpClientRequest.post(`${sim.url}/v1/chat/completions`).pipe(HttpClientRequest.bodyText("{", "application/json")))
        expect(garbage.status).toBe(401)
      })))

  it.live("malformed JSON and missing fields are 400 invalid_request_error; unknown fields are ignored", () =>
    withSimulator(fast, (sim) =>
      Effect.gen(function*() {
        const malformed = yield* send(
          HttpClientRequest.post(`${sim.url}/v1/chat/completions`).pipe(HttpClientRequest.bodyText("{\"model\": ", "application/json"))
        )
        expect(malformed.status).toBe(400)
        expect(errorOf(malformed)).toMatchObject({ type: "invalid_request_error", code: "invalid_json" })

        const missing = yield* send(HttpClientRequest.post(`${sim.url}/v1/chat/completions`).pipe(HttpClientRequest.bodyUnsafeJson({ model: "m" })))
        expect(missing.status).toBe(400)
        expect(errorOf(missing)).toMatchObject({ type: "invalid_request_error", code: "invalid_request" })
        expect(errorOf(missing).message).toContain("messages")

        const badEmbed = yield* embed(sim, { input: [] })
        expect(badEmbed.status).toBe(400)

        const streaming = yield* chat(sim, "hi", { stream: true })
        expect(streaming.status).toBe(400)

        const extra = yield* chat(sim, "hi", { temperature: 0.2, top_p: 1, user: "u", metadata: { a: 1 } })
        expect(completionOf(extra).usage.prompt_tokens).toBe(5)
      })))

  it.live("metrics count every API request by status and token; reset (service or POST /reset) clears them", () =>
    withSimulator({ ...fast, apiKey: "k" }, (sim) =>
      Effect.gen(function*() {
        const auth = { authorization: "Bearer k" }
        const a = completionOf(yield* chat(sim, "first prompt", {}, auth))
        const b = completionOf(yield* chat(sim, "second, longer prompt", {}, auth))
        yield* chat(sim, "INVALID", {}, auth)
        yield* chat(sim, "no key")
        const m = yield* sim.metrics
        expect(m.received).toBe(4)
        expect(m.byStatus).toEqual({ 200: 2, 400: 1, 401: 1 })
        expect(m.promptTokens).toBe(a.usage.prompt_tokens + b.usage.prompt_tokens)
        expect(m.completionTokens).toBe(a.usage.completion_tokens + b.usage.completion_tokens)
        expect(m.inFlight).toBe(0)
        expect(m.queued).toBe(0)
        expect(m.peakInFlight).toBe(1)
        expect(Math.max(...m.timeline.map((slice) => slice.peakInFlight))).toBe(1)
        expect(m.timeline.reduce((s, x) => s + x.received, 0)).toBe(4)
        expect(m.timeline.reduce((s, x) => s + x.completed, 0)).toBe(4)
        m.timeline.forEach((slice, i) => expect(slice.t).toBe(i * 100))

        // GET /metrics serves the same thing.
        const served = Schema.decodeUnknownSync(MetricsBody, strict)((yield* get(sim, "/metrics")).body)
        expect(served.received).toBe(4)
        expect(served.byStatus).toEqual(m.byStatus)

        yield* sim.reset
        const cleared = yield* sim.metrics
        expect(cleared).toEqual({
          received: 0,
          byStatus: {},
          inFlight: 0,
          peakInFlight: 0,
          queued: 0,
          peakQueued: 0,
          promptTokens: 0,
          completionTokens: 0,
          timeline: [],
          batches: { uploads: 0, created: 0, linesBilled: 0, billedTwice: {} }
        })
        // Reset also restarts the ids.
        expect(completionOf(yield* chat(sim, "again", {}, auth)).id).toBe("chatcmpl-sim-1")
        const viaHttp = yield* send(HttpClientRequest.post(`${sim.url}/reset`))
        expect(viaHttp.status).toBe(204)
        expect((yield* sim.metrics).received).toBe(0)
      })))

  it.live("configure changes behaviour while serving, and dies naming an invalid option", () =>
    withSimulator(fast, (sim) =>
      Effect.gen(function*() {
        expect((yield* chat(sim, "hi")).status).toBe(200)
        yield* sim.configure({ failureRate: 1 })
        expect([500, 502, 503]).toContain((yield* chat(sim, "hi")).status)
        yield* sim.configure({ failureRate: 0, latency: { baseMs: 120 } })
        const slow = yield* chat(sim, "hi")
        expect(slow.status).toBe(200)
        expect(slow.ms).toBeGreaterThanOrEqual(118)
        yield* sim.configure({ latency: { baseMs: 2 }, requestsPerMinute: 60, bucketMs: 1000 }) // a bucket of 1
        expect((yield* chat(sim, "hi")).status).toBe(200)
        expect((yield* chat(sim, "hi")).status).toBe(429)
        yield* sim.configure({ requestsPerMinute: undefined }) // back to the default: unlimited
        expect((yield* chat(sim, "hi")).status).toBe(200)

        const exit = yield* Effect.exit(sim.configure({ capacity: 0 }))
        expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain("Simulator: capacity must be an integer ≥ 1 or Infinity, got 0")
        expect((yield* chat(sim, "still fine")).status).toBe(200) // nothing changed
      })))

  it.effect("a raised capacity admits queued requests at once", () =>
    withSimulator({ capacity: 1, latency: { baseMs: 300 } }, (sim) =>
      Effect.gen(function*() {
        const fibers = yield* Effect.forEach([1, 2, 3], (i) => Effect.fork(chat(sim, `q${i}`)))
        yield* metricsWhenReal(sim, (m) => m.inFlight === 1 && m.queued === 2)
        yield* sim.configure({ capacity: 3 })
        expect((yield* sim.metrics).inFlight).toBe(3)
        // One service time serves all three (queued ones waited for none).
        yield* TestClock.adjust("300 millis")
        expect(statuses(yield* settledWhenReal(fibers, 3))).toEqual([200, 200, 200])
      })))

  it.live("failure and jitter draws repeat for the same seed after a reset", () =>
    withSimulator({ failureRate: 0.5, latency: { baseMs: 1 } }, (sim) =>
      Effect.gen(function*() {
        const run = Effect.forEach(Array.from({ length: 16 }, (_, i) => i), (i) => Effect.map(chat(sim, `q${i}`), (r) => r.status))
        const first = yield* run
        expect(first.filter((s) => s === 200).length).toBeGreaterThan(0)
        expect(first.filter((s) => s !== 200).length).toBeGreaterThan(0)
        yield* sim.reset
        expect(yield* run).toEqual(first)
        yield* sim.configure({ seed: 1234 })
        yield* sim.reset
        expect(yield* run).not.toEqual(first)
      })))

  it.effect("on the TestClock, service time and bucket refill are exact to the millisecond", () =>
    withSimulator({ requestsPerMinute: 600, latency: { baseMs: 0, perOutputTokenMs: 10 } }, (sim) =>
      Effect.gen(function*() {
        // 5 completion tokens × 10 ms: served in exactly 50 ms of the simulator's clock.
        const slow = yield* Effect.fork(chat(sim, "hi", { max_tokens: 5 }))
        yield* metricsWhenReal(sim, (m) => m.inFlight === 1)
        yield* TestClock.adjust("49 millis")
        yield* realSleep(30)
        expect((yield* sim.metrics).inFlight).toBe(1)
        yield* TestClock.adjust("1 millis")
        expect((yield* Fiber.join(slow)).status).toBe(200)

        yield* sim.configure({ latency: { perOutputTokenMs: 0 } })
        yield* TestClock.adjust("10 seconds") // the bucket is full again: 10 requests
        for (let i = 0; i < 10; i++) expect((yield* chat(sim, `q${i}`)).status).toBe(200)
        const limited = yield* chat(sim, "q10")
        expect(limited.status).toBe(429)
        expect(limited.headers["retry-after-ms"]).toBe("100")
        expect(limited.headers["x-ratelimit-reset-requests"]).toBe("1s")
        yield* TestClock.adjust("99 millis")
        const almost = yield* chat(sim, "q11")
        expect(almost.status).toBe(429)
        expect(almost.headers["retry-after-ms"]).toBe("1")
        expect(almost.headers["x-ratelimit-reset-requests"]).toBe("901ms")
        yield* TestClock.adjust("1 millis")
        const admitted = yield* chat(sim, "q12")
        expect(admitted.status).toBe(200)
        expect(admitted.headers["x-ratelimit-remaining-requests"]).toBe("0")
        expect(admitted.headers["x-ratelimit-reset-requests"]).toBe("1s")
        yield* TestClock.adjust("250 millis") // 2.5 back, 1 taken
        const later = yield* chat(sim, "q13")
        expect(later.headers["x-ratelimit-remaining-requests"]).toBe("1")
        expect(later.headers["x-ratelimit-reset-requests"]).toBe("850ms")

        const m = yield* sim.metrics
        expect(m.timeline.map((slice) => slice.t)).toEqual(Array.from({ length: m.timeline.length }, (_, i) => i * 100))
        expect(m.timeline[0]).toMatchObject({ t: 0, received: 1, completed: 1, peakInFlight: 1 }) // the 50 ms request
        expect(m.timeline.at(-1)).toMatchObject({ received: 1, completed: 1, byStatus: { 200: 1 } })
      })))

  it.live("invalid options make the layer die with the option's name", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(withSimulator({ failureRate: 2 }, () => Effect.void))
      expect(Exit.isFailure(exit) && Cause.pretty(exit.cause)).toContain("Simulator: failureRate must be between 0 and 1, got 2")
      const exit2 = yield* Effect.exit(withSimulator({ outputTokens: { min: 20, max: 10 } }, () => Effect.void))
      expect(Exit.isFailure(exit2) && Cause.pretty(exit2.cause)).toContain("outputTokens.max")
      const exit3 = yield* Effect.exit(withSimulator({ rateLimitHeaders: "no" as unknown as boolean }, () => Effect.void))
      expect(Exit.isFailure(exit3) && Cause.pretty(exit3.cause)).toContain("Simulator: rateLimitHeaders must be true or false, got no")
    }))

  it.effect("a client that goes away gives back its slot or its place in the queue", () =>
    withSimulator({ capacity: 1, latency: { baseMs: 400 } }, (sim) =>
      Effect.gen(function*() {
        const served = yield* Effect.fork(chat(sim, "served"))
        yield* metricsWhenReal(sim, (m) => m.inFlight === 1)
        const waiting = yield* Effect.fork(chat(sim, "waiting"))
        yield* metricsWhenReal(sim, (m) => m.queued === 1)

        yield* Fiber.interrupt(waiting) // undici aborts: the server interrupts the request's fiber
        const afterQueueAbort = yield* metricsWhenReal(sim, (m) => m.queued === 0)
        expect(afterQueueAbort.queued).toBe(0)
        expect(afterQueueAbort.inFlight).toBe(1)

        yield* Fiber.interrupt(served)
        const afterServedAbort = yield* metricsWhenReal(sim, (m) => m.inFlight === 0)
        expect(afterServedAbort.inFlight).toBe(0)
        expect(afterServedAbort.byStatus).toEqual({ 499: 2 })

        // The slot is free again: a new request is served in one service time (on the TestClock: exactly 400 ms).
        const next = yield* Effect.fork(chat(sim, "next"))
        yield* metricsWhenReal(sim, (m) => m.inFlight === 1)
        yield* TestClock.adjust("400 millis")
        expect(statuses(yield* settledWhenReal([next], 1))).toEqual([200])
      })))
})
