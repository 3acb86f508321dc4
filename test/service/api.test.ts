/**
 * The job API in-process: submit, follow, results in order, idempotency,
 * cancel, dead letters and replay, SSE with Last-Event-ID — on real sockets
 * and real time, against the simulator.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Stream } from "effect"
import * as Idempotency from "../../src/Idempotency.js"
import * as Job from "../../src/service/Job.js"
import * as JobEvents from "../../src/service/JobEvents.js"
import * as JobRunner from "../../src/service/JobRunner.js"
import * as Jobs from "../../src/service/Jobs.js"
import * as JobStore from "../../src/service/JobStore.js"
import * as JobWorkflow from "../../src/service/JobWorkflow.js"
import { client, keyA, layer as serviceLayer, ProviderRequests, Sim, waitFor } from "../support/JobServiceTest.js"

const auth = HttpClientRequest.bearerToken(keyA)

const get = (path: string, headers: Record<string, string> = {}) =>
  Effect.flatMap(HttpClient.HttpClient, (http) =>
    http.execute(HttpClientRequest.get(path).pipe(auth, HttpClientRequest.setHeaders(headers))))

const post = (path: string, json: string, headers: Record<string, string> = {}) =>
  Effect.flatMap(HttpClient.HttpClient, (http) =>
    http.execute(HttpClientRequest.post(path).pipe(auth, HttpClientRequest.setHeaders(headers), HttpClientRequest.bodyText(json, "application/json"))))

const resultsOf = (id: string, query = "") =>
  Effect.gen(function*() {
    const response = yield* get(`/jobs/${id}/results${query}`)
    expect(response.status).toBe(200)
    expect(response.headers["content-type"]).toContain("application/x-ndjson")
    const text = yield* response.text
    return text.split("\n").filter((line) => line !== "").map((line) => JSON.parse(line) as {
      readonly index: number
      readonly status: string
      readonly attempts: number
      readonly output?: { readonly content: string }
      readonly error?: { readonly class: string, readonly message: string }
      readonly reason?: string
    })
  })

interface Frame {
  readonly id: number
  readonly event: string
  readonly data: Record<string, unknown>
}

/** Reads an SSE response to its end (the job's final state ends it). */
const framesOf = (id: string, lastEventId?: number) =>
  Effect.gen(function*() {
    const response = yield* get(`/jobs/${id}/events`, lastEventId === undefined ? {} : { "last-event-id": String(lastEventId) })
    expect(response.status).toBe(200)
    expect(response.headers["content-type"]).toContain("text/event-stream")
    const text = yield* response.stream.pipe(Stream.decodeText(), Stream.mkString)
    return text.split("\n\n").filter((block) => block.startsWith("id:")).map((block): Frame => {
      const fields = new Map(block.split("\n").map((line) => [line.slice(0, line.indexOf(":")), line.slice(line.indexOf(":") + 2)]))
      return { id: Number(fields.get("id")), event: fields.get("event")!, data: JSON.parse(fields.get("data")!) as Record<string, unknown> }
    })
  })

const prompts = (n: number, tag = "prompt") => Array.from({ length: n }, (_, i) => `${tag} ${i}: tell me something`)

describe("job API", () => {
  layer(serviceLayer(), { excludeTestServices: true })("a job's life", (it) => {
    it.effect("submit answers 202 at once; the job runs to finished; results come in input order", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const submitted = yield* api.jobs.submit({ payload: { items: prompts(250), metadata: { purpose: "test" } }, headers: {} })
        expect(submitted.created).toBe(true)
        expect(submitted.state).toBe("queued")
        expect(submitted.id).toMatch(/^job_[0-9a-z]{24}$/)
        const job = yield* waitFor(api.jobs.get({ path: { id: submitted.id } }), (j) => Job.isTerminal(j.state), "the job to end")
        expect(job.state).toBe("finished")
        expect(job.counts).toEqual({ total: 250, succeeded: 250, failed: 0, skipped: 0, pending: 0 })
        expect(job.cost).toBeGreaterThan(0)
        expect(job.tokens).toBeGreaterThan(0)
        expect(job.metadata).toEqual({ purpose: "test" })
        expect(job.startedAt).toBeGreaterThanOrEqual(job.createdAt)
        expect(job.finishedAt).toBeGreaterThanOrEqual(job.startedAt!)
        const results = yield* resultsOf(submitted.id)
        expect(results.map((r) => r.index)).toEqual(Array.from({ length: 250 }, (_, i) => i))
        // Each answer is the answer to its own prompt (the simulator echoes the prompt's start).
        for (const r of results) expect(r.output?.content).toContain(`prompt ${r.index}:`)
        const sim = yield* Sim
        expect((yield* sim.metrics).received).toBe(250)
      }))

    it.effect("each provider call carries the Idempotency-Key of its job and item, the same whichever chunk runs it", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const sent = yield* ProviderRequests
        const before = sent.length
        // Over two chunks, so that the key follows the item's index in the job, not in its chunk.
        const n = JobWorkflow.chunkSize + 3
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(n, "keyed") }, headers: {} })
        yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state), "the job to end")
        const keys = sent.slice(before).filter((r) => r.url.endsWith("/chat/completions")).map((r) => r.headers["idempotency-key"])
        const expected = Array.from({ length: n }, (_, index) => Idempotency.keyOf({ runId: id, itemKey: String(index) }))
        expect(keys.length).toBe(n)
        expect(new Set(keys)).toEqual(new Set(expected))
      }))

    it.effect("results?follow=true, asked at once, streams every item in input order until the job ends", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(300, "follow") }, headers: {} })
        const results = yield* resultsOf(id, "?follow=true")
        expect(results.map((r) => r.index)).toEqual(Array.from({ length: 300 }, (_, i) => i))
        expect(results.every((r) => r.status === "succeeded")).toBe(true)
        const job = yield* api.jobs.get({ path: { id } })
        expect(job.state).toBe("finished")
      }))

    it.effect("the same Idempotency-Key with the same body gives the same job, once; with another body, 422", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const sim = yield* Sim
        const before = (yield* sim.metrics).received
        const first = yield* api.jobs.submit({ payload: { items: prompts(5, "idem") }, headers: { "idempotency-key": "order-17" } })
        const second = yield* api.jobs.submit({ payload: { items: prompts(5, "idem") }, headers: { "idempotency-key": "order-17" } })
        expect(second.id).toBe(first.id)
        expect([first.created, second.created]).toEqual([true, false])
        yield* waitFor(api.jobs.get({ path: { id: first.id } }), (j) => j.state === "finished")
        expect((yield* sim.metrics).received - before).toBe(5)
        const other = yield* api.jobs.submit({ payload: { items: prompts(5, "idem") }, headers: {} })
        expect(other.id).not.toBe(first.id)
        // Bodies are compared decoded: the order of fields does not matter (JSON.stringify keeps the order written).
        const body = (value: unknown) => post("/jobs", JSON.stringify(value), { "idempotency-key": "order-18" })
        const a = yield* body({ items: ["one", "two"], priority: 2, metadata: { a: "1", b: "2" }, timeLimit: { soft: 5, hard: 9 } })
        expect(a.status).toBe(202)
        const created = (yield* a.json) as { readonly id: string, readonly created: boolean }
        const b = yield* body({ timeLimit: { hard: 9, soft: 5 }, metadata: { b: "2", a: "1" }, priority: 2, items: ["one", "two"] })
        expect(b.status).toBe(202)
        expect(yield* b.json).toMatchObject({ id: created.id, created: false })
        // Another body under a used key: refused, naming the key; nothing submitted.
        const jobsBefore = (yield* api.jobs.list({ urlParams: { limit: 200 } })).jobs.length
        for (const other of [{ items: ["one", "two"], priority: 3 }, { items: ["one", "two"] }, { items: ["two", "one"], priority: 2 }]) {
          const reused = yield* body(other)
          expect(reused.status).toBe(422)
          const error = (yield* reused.json) as Record<string, unknown>
          expect(error).toMatchObject({ _tag: "IdempotencyKeyReused", key: "order-18" })
          expect(error.message).toContain("\"order-18\"")
        }
        const typed = yield* api.jobs.submit({ payload: { items: prompts(6, "idem") }, headers: { "idempotency-key": "order-17" } }).pipe(Effect.flip)
        expect(typed._tag).toBe("IdempotencyKeyReused")
        expect((yield* api.jobs.list({ urlParams: { limit: 200 } })).jobs.length).toBe(jobsBefore)
        expect((yield* api.jobs.get({ path: { id: first.id } })).counts.total).toBe(5)
      }))

    it.effect("submits with one Idempotency-Key at once make one job", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const submitted = yield* Effect.forEach(
          [1, 2, 3, 4],
          () => api.jobs.submit({ payload: { items: prompts(300, "race") }, headers: { "idempotency-key": "race-1" } }),
          { concurrency: "unbounded" }
        )
        expect(new Set(submitted.map((s) => s.id)).size).toBe(1)
        expect(submitted.filter((s) => s.created)).toHaveLength(1)
        yield* waitFor(api.jobs.get({ path: { id: submitted[0]!.id } }), (j) => j.state === "finished")
      }))

    it.effect("SSE: state, progress and a final state, in order; Last-Event-ID resumes after it", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        // 400 items, 8 at a time, 20 ms each: ~1 s, so progress is published (every 500 ms) while it runs.
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(400, "sse") }, headers: {} })
        const frames = yield* framesOf(id)
        const ids = frames.map((f) => f.id)
        expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => i + 1))
        expect(frames[0]).toMatchObject({ event: "state", data: { state: "queued" } })
        // Once, though two chunks begin at once and each moves a queued job to running.
        expect(frames.filter((f) => f.event === "state" && f.data.state === "running")).toHaveLength(1)
        const progress = frames.filter((f) => f.event === "progress")
        expect(progress.some((f) => (f.data.pending as number) > 0 && (f.data.succeeded as number) > 0)).toBe(true)
        expect(progress[progress.length - 1]!.data).toMatchObject({ succeeded: 400, pending: 0, total: 400 })
        // Each progress event says how far it got: settled counts never go back.
        const settled = progress.map((f) => (f.data.succeeded as number) + (f.data.failed as number))
        expect(settled).toEqual([...settled].sort((a, b) => a - b))
        expect(frames.find((f) => f.event === "limit")?.data.limit).toBe(8)
        expect(frames[frames.length - 1]).toMatchObject({ event: "state", data: { state: "finished" } })
        for (const f of frames) expect(typeof f.data.at).toBe("number")
        // Resuming after the third event gives exactly the rest.
        const rest = yield* framesOf(id, 3)
        expect(rest.map((f) => f.id)).toEqual(ids.slice(3))
      }))

    it.effect("SSE ends at the final state when a progress event crossed the job's end (a tick begun before it)", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(5, "late") }, headers: {} })
        yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state), "the job to end")
        const ended = yield* framesOf(id)
        expect(ended[ended.length - 1]).toMatchObject({ event: "state", data: { state: "finished" } })
        // What a runner's progress tick that read the totals as the job ended publishes (another runner's, say).
        const events = yield* JobEvents.JobEvents
        yield* events.publish(id, "progress", { total: 5, succeeded: 5, failed: 0, skipped: 0, pending: 0, cost: 0, tokens: 0, rate: 0 })
        yield* events.flush
        const bounded = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
          Effect.timeoutFail(effect, { duration: "10 seconds", onTimeout: () => new Error("the SSE stream did not end") })
        // From the start: the same events, ending at the final state; the late one is not worth waiting behind.
        expect((yield* bounded(framesOf(id))).map((f) => f.id)).toEqual(ended.map((f) => f.id))
        // Resuming after the final state, or after the late event, ends at once.
        expect(yield* bounded(framesOf(id, ended[ended.length - 1]!.id))).toEqual([])
        expect(yield* bounded(framesOf(id, ended[ended.length - 1]!.id + 1))).toEqual([])
      }))

    it.effect("a job in the list is shown as GET /jobs/:id shows it: counts, cost and where its items' time went", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const ids: Array<string> = []
        for (const n of [12, 3]) ids.push((yield* api.jobs.submit({ payload: { items: prompts(n, `shown${n}`) }, headers: {} })).id)
        for (const id of ids) yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state), "the job to end")
        const listed = (yield* api.jobs.list({ urlParams: { limit: 200 } })).jobs
        for (const [id, n] of [[ids[0]!, 12], [ids[1]!, 3]] as const) {
          const one = yield* api.jobs.get({ path: { id } })
          expect(one.counts).toEqual({ total: n, succeeded: n, failed: 0, skipped: 0, pending: 0 })
          // Every item made one call; its time, summed over the job's chunks, is split into parts of its wall time.
          expect(one.timeSpent?.items).toBe(n)
          expect(one.timeSpent!.inFlightMs).toBeGreaterThan(0)
          expect(one.timeSpent!.wallMs).toBeGreaterThanOrEqual(one.timeSpent!.inFlightMs)
          expect(listed.find((j) => j.id === id)).toEqual(one)
        }
      }))

    it.effect("the list is newest first, filtered by state, paginated with a cursor", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const ids: Array<string> = []
        for (let i = 0; i < 3; i++) ids.push((yield* api.jobs.submit({ payload: { items: [`page ${i}`] }, headers: {} })).id)
        for (const id of ids) yield* waitFor(api.jobs.get({ path: { id } }), (j) => j.state === "finished")
        const first = yield* api.jobs.list({ urlParams: { limit: 2 } })
        expect(first.jobs.map((j) => j.id)).toEqual([ids[2], ids[1]])
        expect(first.next).toBeDefined()
        const second = yield* api.jobs.list({ urlParams: { limit: 2, cursor: first.next! } })
        expect(second.jobs[0]!.id).toBe(ids[0])
        const finished = yield* api.jobs.list({ urlParams: { state: "finished", limit: 200 } })
        expect(finished.jobs.every((j) => j.state === "finished")).toBe(true)
        const cancelled = yield* api.jobs.list({ urlParams: { state: "cancelled" } })
        expect(cancelled.jobs).toEqual([])
      }))

    it.effect("the OpenAPI document lists every endpoint; the reference page and the dashboard are served", () =>
      Effect.gen(function*() {
        const http = yield* HttpClient.HttpClient
        const openapi = yield* http.get("/openapi.json")
        expect(openapi.status).toBe(200)
        const doc = (yield* openapi.json) as { readonly paths: Record<string, Record<string, unknown>> }
        expect(Object.keys(doc.paths).sort()).toEqual([
          "/jobs",
          "/jobs/{id}",
          "/jobs/{id}/cancel",
          "/jobs/{id}/dead-letters",
          "/jobs/{id}/dead-letters/replay",
          "/jobs/{id}/events",
          "/jobs/{id}/results",
          "/jobs/{id}/shards",
          "/profiles"
        ])
        expect(Object.keys(doc.paths["/jobs"]!).sort()).toEqual(["get", "post"])
        for (const page of ["/reference", "/"]) {
          const response = yield* http.get(page)
          expect(response.status).toBe(200)
          expect(response.headers["content-type"]).toContain("text/html")
        }
      }))

    it.effect("profiles are listed without their URLs", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const { profiles } = yield* api.jobs.profiles()
        expect(profiles).toEqual([
          { name: "sim", models: ["sim-chat", "sim-other"], default: true },
          { name: "second", models: ["sim-chat"], default: false }
        ])
      }))
  })

  layer(serviceLayer({ simulator: { latency: { baseMs: 400, jitter: 0 }, capacity: 4 }, concurrency: 4 }), {
    excludeTestServices: true
  })("cancel", (it) => {
    it.effect("cancel aborts the calls in flight, keeps the results so far and skips the rest", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const sim = yield* Sim
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(400, "cancel") }, headers: {} })
        yield* waitFor(api.jobs.get({ path: { id } }), (j) => j.counts.succeeded >= 8, "some results")
        const cancelled = yield* api.jobs.cancel({ path: { id } })
        expect(cancelled.state).toBe("cancelled")
        expect(cancelled.reason).toBe("cancelled by request")
        const job = yield* waitFor(api.jobs.get({ path: { id } }), (j) => j.counts.pending === 0, "the rest to be skipped")
        expect(job.state).toBe("cancelled")
        expect(job.counts.succeeded).toBeGreaterThanOrEqual(8)
        expect(job.counts.succeeded + job.counts.skipped).toBe(400)
        // The calls in flight were aborted: the provider sees no more than it had then, and nothing new.
        const received = (yield* sim.metrics).received
        expect(received).toBeLessThan(400)
        yield* Effect.sleep("300 millis")
        const metrics = yield* sim.metrics
        expect(metrics.received).toBe(received)
        // 499: the simulator saw the client close requests before their answer.
        expect(metrics.byStatus["499"] ?? 0).toBeGreaterThan(0)
        const results = yield* resultsOf(id)
        expect(results.length).toBe(400)
        expect(results.filter((r) => r.status === "succeeded").length).toBe(job.counts.succeeded)
        expect(results.filter((r) => r.status === "skipped").every((r) => r.reason === "cancelled by request")).toBe(true)
        // Cancelling again changes nothing; the SSE stream ends with the cancelled state.
        expect((yield* api.jobs.cancel({ path: { id } })).state).toBe("cancelled")
        const frames = yield* framesOf(id)
        expect(frames[frames.length - 1]).toMatchObject({ event: "state", data: { state: "cancelled" } })
      }))

    // Across processes a cancel notice can be lost: the runner's progress tick reads the states of the jobs it runs
    // (every few ticks) and interrupts those it finds cancelled. Here the store says so and no notice is sent.
    it.effect("a job found cancelled in the store, its notice lost, is interrupted by the runner's progress tick", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const store = yield* JobStore.JobStore
        const sim = yield* Sim
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(400, "lost notice") }, headers: {} })
        yield* waitFor(api.jobs.get({ path: { id } }), (j) => j.counts.succeeded >= 4, "some results")
        expect(yield* store.setState(id, "cancelled", { reason: "cancelled elsewhere", now: Date.now() })).toBe(true)
        const job = yield* waitFor(api.jobs.get({ path: { id } }), (j) => j.counts.pending === 0, "the rest to be skipped")
        expect(job.state).toBe("cancelled")
        expect(job.counts.skipped).toBeGreaterThan(300)
        const received = (yield* sim.metrics).received
        yield* Effect.sleep("300 millis")
        expect((yield* sim.metrics).received).toBe(received)
      }))

    // The runner starts an execution with the round's total, so the workflow has no start step: its chunks are
    // what find the job cancelled. A submit's execution starts from a queue, which makes the moment racy through
    // the API; here the job is stored as a submit stores it, cancelled, and only then its execution started.
    it.effect("a job cancelled before its execution began ends cancelled: no call, no running state, every item skipped", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const store = yield* JobStore.JobStore
        const runner = yield* JobRunner.JobRunner
        const sent = yield* ProviderRequests
        const before = sent.length
        const now = Date.now()
        // Two chunks, so that each is seen to find the job cancelled.
        const total = JobWorkflow.chunkSize + 50
        const { job } = yield* store.insert({
          id: Jobs.newId(),
          tenant: "a",
          idempotencyKey: undefined,
          payloadHash: undefined,
          profile: "sim",
          model: "sim-chat",
          priority: 0,
          spec: {},
          metadata: {},
          total,
          createdAt: now
        }, prompts(total, "queued").map((input) => ({ input })), [JobEvents.newEvent("state", { state: "queued" }, now)])
        const cancelled = yield* api.jobs.cancel({ path: { id: job.id } })
        expect(cancelled.state).toBe("cancelled")
        yield* runner.execute(job, 0)
        const ended = yield* waitFor(api.jobs.get({ path: { id: job.id } }), (j) => j.counts.pending === 0, "the items to be skipped")
        expect(ended.state).toBe("cancelled")
        expect(ended.reason).toBe("cancelled by request")
        expect(ended.startedAt).toBeUndefined()
        expect(ended.counts).toMatchObject({ total, succeeded: 0, failed: 0, skipped: total })
        const results = yield* resultsOf(job.id)
        expect(results.map((r) => r.status)).toEqual(Array.from({ length: total }, () => "skipped"))
        const keys = new Set(Array.from({ length: total }, (_, index) => Idempotency.keyOf({ runId: job.id, itemKey: String(index) })))
        expect(sent.slice(before).filter((r) => keys.has(r.headers["idempotency-key"] ?? ""))).toEqual([])
        const states = (yield* framesOf(job.id)).filter((f) => f.event === "state").map((f) => f.data.state)
        expect(states).toEqual(["queued", "cancelled"])
      }))
  })

  layer(serviceLayer(), { excludeTestServices: true })("dead letters", (it) => {
    it.effect("items that failed for good are dead letters with their error; replay runs just those again", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const sim = yield* Sim
        // The simulator answers 400 invalid_prompt to any prompt containing INVALID: a permanent failure.
        const items = prompts(30, "dl").map((p, i) => (i % 10 === 3 ? `INVALID ${p}` : p))
        const { id } = yield* api.jobs.submit({ payload: { items }, headers: {} })
        const job = yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state))
        expect(job.state).toBe("finished")
        expect(job.counts).toMatchObject({ succeeded: 27, failed: 3 })
        const { items: dead } = yield* api.jobs.deadLetters({ path: { id } })
        expect(dead.map((d) => d.index)).toEqual([3, 13, 23])
        for (const d of dead) {
          expect(d.errorClass).toBe("Permanent")
          expect(d.status).toBe(400)
          expect(d.attempts).toBe(1)
          expect(d.input).toBe(items[d.index])
          expect(d.message.length).toBeGreaterThan(0)
        }
        const before = (yield* sim.metrics).received
        const replaying = yield* api.jobs.replay({ path: { id } })
        expect(replaying.round).toBe(1)
        const after = yield* waitFor(api.jobs.get({ path: { id } }), (j) => j.round === 1 && Job.isTerminal(j.state))
        expect(after.state).toBe("finished")
        expect(after.counts).toMatchObject({ succeeded: 27, failed: 3 })
        expect((yield* sim.metrics).received - before).toBe(3)
        const results = yield* resultsOf(id)
        expect(results.map((r) => r.index)).toEqual(Array.from({ length: 30 }, (_, i) => i))
        expect(results.filter((r) => r.status === "failed").map((r) => r.error!.class)).toEqual(["Permanent", "Permanent", "Permanent"])
        // The event stream spans both rounds: it does not end at the first round's final state.
        const frames = yield* framesOf(id)
        const states = frames.filter((f) => f.event === "state").map((f) => f.data.state)
        expect(states).toEqual(["queued", "running", "finished", "queued", "running", "finished"])
        // Resuming after the last event of an ended job ends at once.
        expect(yield* framesOf(id, frames[frames.length - 1]!.id)).toEqual([])
      }))

    it.effect("replaying a job that still runs is refused with 409", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(200, "busy") }, headers: {} })
        const error = yield* api.jobs.replay({ path: { id } }).pipe(Effect.flip)
        expect(error._tag).toBe("JobBusy")
        yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state))
      }))
  })

  layer(serviceLayer({ simulator: { latency: { baseMs: 50, jitter: 0 } } }), { excludeTestServices: true })("priorities and limits", (it) => {
    it.effect("on a shared provider, a higher-priority job submitted later finishes first; the other keeps its results and finishes after", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        // Profile "second" has a fixed concurrency of 2, shared by both jobs.
        const low = yield* api.jobs.submit({ payload: { items: prompts(40, "low"), profile: "second" }, headers: {} })
        yield* waitFor(api.jobs.get({ path: { id: low.id } }), (j) => j.state === "running")
        const high = yield* api.jobs.submit({ payload: { items: prompts(40, "high"), profile: "second", priority: 5 }, headers: {} })
        const highDone = yield* waitFor(api.jobs.get({ path: { id: high.id } }), (j) => j.state === "finished")
        const lowThen = yield* api.jobs.get({ path: { id: low.id } })
        expect(lowThen.state).toBe("running")
        expect(lowThen.counts.succeeded).toBeGreaterThan(0)
        expect(lowThen.counts.pending).toBeGreaterThan(0)
        const lowDone = yield* waitFor(api.jobs.get({ path: { id: low.id } }), (j) => j.state === "finished")
        expect(lowDone.finishedAt!).toBeGreaterThan(highDone.finishedAt!)
        expect(highDone.concurrencyLimit).toBe(2)
      }))

    it.effect("a soft time limit stops admitting: the job ends stopped, the rest skipped, what ran kept", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        // 2 at a time, 50 ms each: 200 items need 5 s; the soft limit is 0.5 s.
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(200, "soft"), profile: "second", timeLimit: { soft: 0.5 } }, headers: {} })
        const job = yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state))
        expect(job.state).toBe("stopped")
        expect(job.reason).toBe("soft time limit reached")
        expect(job.counts.succeeded).toBeGreaterThan(0)
        expect(job.counts.succeeded + job.counts.skipped).toBe(200)
        expect(job.counts.failed).toBe(0)
      }))

    it.effect("a hard time limit interrupts the calls in flight: the job fails, what ran is kept", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(200, "hard"), profile: "second", timeLimit: { hard: 0.5 } }, headers: {} })
        const job = yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state) && j.counts.pending === 0)
        expect(job.state).toBe("failed")
        expect(job.reason).toBe("hard time limit reached")
        expect(job.counts.succeeded).toBeGreaterThan(0)
        expect(job.counts.succeeded + job.counts.skipped).toBe(200)
      }))

    it.effect("an item deadline fails the items that take longer, as Timeout", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        // The simulator answers in 50 ms; each item may take 10.
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(6, "deadline"), itemDeadline: 0.01 }, headers: {} })
        const job = yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state))
        expect(job.counts).toMatchObject({ failed: 6, succeeded: 0 })
        const { items } = yield* api.jobs.deadLetters({ path: { id } })
        expect(items.map((d) => d.errorClass)).toEqual(Array(6).fill("Timeout"))
      }))

    it.effect("a budget stops admitting once the next item would pass it", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const { id } = yield* api.jobs.submit({ payload: { items: prompts(300, "budget"), maxCost: 0.0005 }, headers: {} })
        const job = yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state))
        expect(job.state).toBe("stopped")
        expect(job.reason).toBe("budget reached")
        expect(job.cost).toBeLessThanOrEqual(0.0005)
        expect(job.counts.succeeded).toBeGreaterThan(0)
        expect(job.counts.skipped).toBeGreaterThan(0)
      }))
  })
})
