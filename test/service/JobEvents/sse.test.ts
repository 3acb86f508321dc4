/**
 * The SSE response of a job's events (`JobHttp.sseResponse`) over a real
 * `JobEvents` on the memory store, on `TestClock`: the retry hint first,
 * the backlog and then live events in order (several at once in one chunk),
 * a keep-alive comment only after a quiet `keepAliveEvery`, and the end of
 * the response once the follower ends.
 */
import type * as HttpBody from "@effect/platform/HttpBody"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Fiber, Layer, Option, Stream, TestClock } from "effect"
import * as JobEvents from "../../../src/service/JobEvents.js"
import * as JobHttp from "../../../src/service/JobHttp.js"
import * as JobSignals from "../../../src/service/JobSignals.js"
import * as JobStore from "../../../src/service/JobStore.js"
import { job } from "../JobStore/conformance.js"

const events = JobEvents.layer.pipe(Layer.provideMerge(JobStore.layerMemory), Layer.provideMerge(JobSignals.layerLocal))

/** The response body's chunks as text, `n` of them. */
const chunksOf = (response: ReturnType<typeof JobHttp.sseResponse>, n: number) =>
  (response.body as HttpBody.Stream).stream.pipe(
    Stream.map((bytes) => new TextDecoder().decode(bytes)),
    Stream.take(n),
    Stream.runCollect,
    Effect.map(Chunk.toReadonlyArray)
  )

const progress = (succeeded: number) => ({
  total: 3,
  succeeded,
  failed: 0,
  skipped: 0,
  pending: 3 - succeeded,
  cost: 0,
  tokens: 0,
  rate: 0
})

describe("JobHttp.sseResponse", () => {
  it.scoped("retry hint, stored events, a keep-alive only after a quiet 15 s, then live events together in one chunk", () =>
    Effect.gen(function*() {
      const store = yield* JobStore.JobStore
      const bus = yield* JobEvents.JobEvents
      yield* store.insert(job("job_sse", 3), [{ input: "a" }, { input: "b" }, { input: "c" }])
      yield* bus.publish("job_sse", "state", { state: "queued" })
      yield* bus.flush
      const reading = yield* Effect.fork(chunksOf(JobHttp.sseResponse(bus.follow("job_sse", 0)), 4))
      yield* TestClock.adjust("14 seconds")
      expect(Option.isNone(yield* Fiber.poll(reading))).toBe(true)
      yield* TestClock.adjust("1 second")
      yield* bus.publish("job_sse", "progress", progress(1))
      yield* bus.publish("job_sse", "progress", progress(2))
      yield* bus.flush
      const chunks = yield* Fiber.join(reading)
      expect(chunks[0]).toBe("retry: 2000\n\n")
      expect(chunks[1]).toMatch(/^id: 1\nevent: state\ndata: \{"state":"queued","at":\d+\}\n\n$/)
      expect(chunks[2]).toBe(": keep-alive\n\n")
      // Both live events in one chunk.
      const frame = (id: number, succeeded: number) => `id: ${id}\nevent: progress\ndata: \\{.*"succeeded":${succeeded}.*\\}\n\n`
      expect(chunks[3]).toMatch(new RegExp(`^${frame(2, 1)}${frame(3, 2)}$`))
    }).pipe(Effect.provide(events)))

  it.scoped("ends when the follower ends, after its last events; an ended follower answers the hint alone", () =>
    Effect.gen(function*() {
      const frames: ReadonlyArray<JobEvents.Event> = [{ jobId: "j", seq: 7, type: "state", data: "{\"state\":\"finished\"}" }]
      let calls = 0
      const follower: JobEvents.Follower = { next: () => Effect.succeed({ events: calls++ === 0 ? frames : [], ended: true }) }
      const body = yield* chunksOf(JobHttp.sseResponse(Effect.succeed(follower)), 10)
      expect(body).toEqual(["retry: 2000\n\n", "id: 7\nevent: state\ndata: {\"state\":\"finished\"}\n\n"])
      expect(calls).toBe(1)
      const ended: JobEvents.Follower = { next: () => Effect.succeed({ events: [], ended: true }) }
      expect(yield* chunksOf(JobHttp.sseResponse(Effect.succeed(ended)), 10)).toEqual(["retry: 2000\n\n"])
    }))
})
