/**
 * The contract every `JobStore` backend meets, run by each backend's test
 * file: items and outcomes, totals, results in order, dead letters, skipping
 * and reopening — including groups larger than one SQL statement takes —,
 * the transition table, idempotency keys under concurrent inserts, listing
 * and its pages, events, and what is kept as JSON coming back as it went in.
 *
 * Each test builds the store anew (`store` is provided per test), so a
 * backend's layer must give a fresh store per build (a new file, a new
 * database). `sqlConformance` adds what only the SQL store has: old
 * databases, schema versions, stored values that do not decode.
 */
import { SqlClient } from "@effect/sql"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import * as Job from "../../../src/service/Job.js"
import * as JobStore from "../../../src/service/JobStore.js"
import * as SqlJobStore from "../../../src/service/SqlJobStore.js"

export interface Options {
  /** Reports the suite as skipped (e.g. no database configured). */
  readonly skip?: boolean
}

export const job = (id: string, total: number) => ({
  id,
  tenant: "t",
  idempotencyKey: undefined,
  payloadHash: undefined,
  profile: "p",
  model: "m",
  priority: 0,
  spec: {},
  metadata: {},
  total,
  createdAt: 1000
})

const completion = (index: number): Job.Completion => ({
  content: `answer ${index}`,
  finishReason: "stop",
  usage: { promptTokens: 3, cachedPromptTokens: 0, completionTokens: 7, totalTokens: 10 },
  cost: 0.001,
  model: "m"
})

export function outcome(index: number, status: "succeeded"): Extract<JobStore.Outcome, { readonly status: "succeeded" }>
export function outcome(index: number, status: "succeeded" | "failed"): JobStore.Outcome
export function outcome(index: number, status: "succeeded" | "failed"): JobStore.Outcome {
  const numbers = { index, attempts: 1 + (index % 3), durationMs: index / 10 }
  return status === "succeeded"
    ? { ...numbers, status, output: completion(index), cost: 0.001, tokens: 10 }
    : { ...numbers, status, output: { class: "Permanent", message: `bad ${index}` }, errorClass: "Permanent", cost: 0, tokens: 0 }
}

const spent: JobStore.TimeSpent = {
  items: 3,
  queuedMs: 10,
  rateLimitMs: 300,
  gateMs: 2,
  inFlightMs: 1500,
  backoffMs: 50,
  wallMs: 2230
}

/** Moves a queued job to `state` by allowed moves only. */
const bringTo = (store: JobStore.Store, id: string, state: Job.JobState) =>
  Effect.gen(function*() {
    const path: ReadonlyArray<Job.JobState> = state === "queued"
      ? []
      : state === "cancelled" || state === "running"
        ? [state]
        : ["running", state]
    for (const step of path) expect(yield* store.setState(id, step, { now: 8000 })).toBe(true)
  })

export const conformance = (name: string, store: Layer.Layer<JobStore.JobStore, unknown>, options: Options = {}) =>
  describe.skipIf(options.skip === true)(name, () => {
    /** A test on a store of its own. */
    const test = (title: string, body: (store: JobStore.Store) => Effect.Effect<void, unknown>) =>
      it.effect(title, () => Effect.flatMap(JobStore.JobStore, body).pipe(Effect.provide(store)))

    test("1 200 outcomes in one call (in SQL: three statements, one transaction): totals, order, dead letters, skip, reopen", (store) =>
      Effect.gen(function*() {
        const items = Array.from({ length: 1300 }, (_, i): JobStore.NewItem =>
          i === 5 ? { input: "{broken", rejected: "in.jsonl:6: invalid JSON" } : { input: `prompt ${i}` })
        const { created } = yield* store.insert(job("job_a", 1300), items)
        expect(created).toBe(true)
        expect((yield* store.pending("job_a", 0, 10)).map((p) => p.index)).toEqual([0, 1, 2, 3, 4, 6, 7, 8, 9])
        const outcomes = Array.from({ length: 1200 }, (_, i) => i).filter((i) => i !== 5)
          .map((i) => outcome(i, i % 100 === 7 ? "failed" : "succeeded"))
        yield* store.record("job_a", outcomes, 2000)
        const totals = yield* store.totals("job_a")
        expect(totals).toMatchObject({ total: 1300, succeeded: 1187, failed: 13, skipped: 0, pending: 100 })
        expect(totals.cost).toBeCloseTo(1.187, 9)
        expect(totals.tokens).toBe(11870)
        const settled = yield* store.settled("job_a", -1, 2000)
        expect(settled.map((s) => s.index)).toEqual(Array.from({ length: 1200 }, (_, i) => i))
        expect(settled[42]).toMatchObject({ index: 42, status: "succeeded", attempts: 1, durationMs: 4.2, input: "prompt 42" })
        expect(settled[5]).toMatchObject({
          index: 5,
          status: "failed",
          errorClass: "Rejected",
          input: "{broken",
          output: { class: "Rejected", message: "in.jsonl:6: invalid JSON" }
        })
        const dead = yield* store.deadLetters("job_a")
        expect(dead.map((d) => d.errorClass)).toEqual(["Rejected", ...Array(12).fill("Permanent")])
        expect(yield* store.skipPending("job_a", "cancelled", 3000)).toBe(100)
        expect((yield* store.totals("job_a")).skipped).toBe(100)
        expect((yield* store.settled("job_a", 1299, 10))).toEqual([])
        expect((yield* store.settled("job_a", 1298, 10))).toEqual([
          { index: 1299, input: "prompt 1299", status: "skipped", output: { reason: "cancelled" }, attempts: 0, durationMs: 0, cost: 0, tokens: 0 }
        ])
        // A job is replayed once it has ended.
        expect(yield* store.setState("job_a", "running", { now: 2000 })).toBe(true)
        expect(yield* store.setState("job_a", "cancelled", { now: 3000, reason: "cancelled" })).toBe(true)
        // Reopening takes the Permanent failures back, never the rejected line.
        expect(yield* store.reopenFailed("job_a", 4000)).toBe(12)
        const reopened = yield* store.get("job_a")
        expect(reopened).toMatchObject({ state: "queued", round: 1, reason: undefined, startedAt: 2000, finishedAt: undefined })
        expect((yield* store.pending("job_a", 0, 1300)).map((p) => p.index)).toEqual(outcomes.filter((o) => o.status === "failed").map((o) => o.index))
        // A reopened item keeps its last attempt's numbers in the totals; nothing left to reopen reopens nothing.
        expect(yield* store.totals("job_a")).toMatchObject({ failed: 1, pending: 12, skipped: 100 })
        expect(yield* store.reopenFailed("job_a", 5000)).toBe(0)
      }))

    test("recordAll: several jobs' outcomes in one step (600 rows: two SQL statements), each job's to its own items", (store) =>
      Effect.gen(function*() {
        yield* store.insert(job("job_x", 400), Array.from({ length: 400 }, (_, i) => ({ input: `x ${i}` })))
        yield* store.insert(job("job_y", 300), Array.from({ length: 300 }, (_, i) => ({ input: `y ${i}` })))
        yield* store.recordAll([
          { jobId: "job_x", outcomes: Array.from({ length: 350 }, (_, i) => outcome(i, "succeeded")) },
          { jobId: "job_y", outcomes: [outcome(0, "failed"), outcome(2, "succeeded")] },
          { jobId: "job_gone", outcomes: [outcome(0, "succeeded")] },
          { jobId: "job_y", outcomes: Array.from({ length: 250 }, (_, i) => outcome(i + 10, "succeeded")) }
        ], 3000)
        expect(yield* store.totals("job_x")).toMatchObject({ succeeded: 350, failed: 0, pending: 50 })
        expect(yield* store.totals("job_y")).toMatchObject({ succeeded: 251, failed: 1, pending: 48 })
        expect((yield* store.pending("job_y", 0, 12)).map((p) => p.index)).toEqual([1, 3, 4, 5, 6, 7, 8, 9])
        const settled = yield* store.settled("job_y", -1, 3)
        expect(settled.map((s) => [s.index, s.status, s.input])).toEqual([[0, "failed", "y 0"], [2, "succeeded", "y 2"], [10, "succeeded", "y 10"]])
        yield* store.recordAll([], 3000)
      }))

    test("totals follow every write: an outcome over a skipped item, a second outcome for one item, a replay's reopened items", (store) =>
      Effect.gen(function*() {
        yield* store.insert(job("job_t", 4), [{ input: "a" }, { input: "b" }, { input: "{", rejected: "in.jsonl:3: invalid JSON" }, { input: "d" }])
        expect(yield* store.totals("job_t")).toEqual({ total: 4, succeeded: 0, failed: 1, skipped: 0, pending: 3, cost: 0, tokens: 0 })
        yield* store.record("job_t", [outcome(0, "failed")], 2000)
        expect(yield* store.skipPending("job_t", "cancelled", 2500)).toBe(2)
        expect(yield* store.totals("job_t")).toEqual({ total: 4, succeeded: 0, failed: 2, skipped: 2, pending: 0, cost: 0, tokens: 0 })
        // An item that finished after its job's cancel skipped it: its outcome replaces the skip, and counts once.
        yield* store.record("job_t", [outcome(1, "succeeded")], 3000)
        yield* store.record("job_t", [outcome(1, "succeeded")], 3100)
        expect(yield* store.totals("job_t")).toEqual({ total: 4, succeeded: 1, failed: 2, skipped: 1, pending: 0, cost: 0.001, tokens: 10 })
        yield* bringTo(store, "job_t", "cancelled")
        expect(yield* store.reopenFailed("job_t", 4000)).toBe(1)
        expect(yield* store.totals("job_t")).toEqual({ total: 4, succeeded: 1, failed: 1, skipped: 1, pending: 1, cost: 0.001, tokens: 10 })
        yield* store.record("job_t", [outcome(0, "succeeded")], 5000)
        const totals = yield* store.totals("job_t")
        expect(totals).toMatchObject({ total: 4, succeeded: 2, failed: 1, skipped: 1, pending: 0, tokens: 20 })
        expect(totals.cost).toBeCloseTo(0.002, 12)
        expect((yield* store.totalsOf(["job_t", "job_none"])).get("job_t")).toEqual(totals)
      }))

    test("time spent: none before a chunk ends, then the sum of what each chunk adds, per job", (store) =>
      Effect.gen(function*() {
        yield* store.insert(job("t_one", 2), [{ input: "a" }, { input: "b" }])
        expect(yield* store.timeSpent("t_one")).toBeUndefined()
        yield* store.addTimeSpent("t_one", spent)
        yield* store.addTimeSpent("t_one", { ...spent, items: 1, inFlightMs: 0.25 })
        yield* store.addTimeSpent("t_other", spent)
        expect(yield* store.timeSpent("t_one")).toEqual({
          items: 4,
          queuedMs: 20,
          rateLimitMs: 600,
          gateMs: 4,
          inFlightMs: 1500.25,
          backoffMs: 100,
          wallMs: 4460
        })
      }))

    test("statesOf: the state of each job that exists, in one read (over 500 ids: two statements)", (store) =>
      Effect.gen(function*() {
        yield* store.insert(job("states_a", 1), [{ input: "a" }])
        yield* store.insert(job("states_b", 1), [{ input: "a" }])
        yield* store.setState("states_b", "running", { now: 2000 })
        yield* store.setState("states_b", "cancelled", { reason: "cancelled by request", now: 3000 })
        const ids = [...Array.from({ length: 300 }, (_, i) => `gone_${i}`), "states_a", "states_b", "states_a", ...Array.from({ length: 300 }, (_, i) => `lost_${i}`)]
        expect(new Map(yield* store.statesOf(ids))).toEqual(new Map([["states_a", "queued"], ["states_b", "cancelled"]]))
        expect((yield* store.statesOf([])).size).toBe(0)
      }))

    test("totalsOf, timeSpentOf: several jobs in one read (over 500 ids: two statements), each as totals and timeSpent give it", (store) =>
      Effect.gen(function*() {
        yield* store.insert(job("many_a", 3), [{ input: "a" }, { input: "b" }, { input: "c" }])
        yield* store.insert(job("many_b", 2), [{ input: "a" }, { input: "b" }])
        yield* store.insert(job("many_c", 1), [{ input: "a" }])
        yield* store.recordAll([
          { jobId: "many_a", outcomes: [outcome(0, "succeeded"), outcome(2, "failed")] },
          { jobId: "many_b", outcomes: [outcome(1, "succeeded")] }
        ], 3000)
        yield* store.addTimeSpent("many_a", spent)
        yield* store.addTimeSpent("many_c", { ...spent, items: 1 })
        // Unknown ids (and a repeated one) around the known, past one statement's worth.
        const ids = [...Array.from({ length: 300 }, (_, i) => `gone_${i}`), "many_a", "many_b", "many_c", "many_a", ...Array.from({ length: 300 }, (_, i) => `lost_${i}`)]
        const totals = yield* store.totalsOf(ids)
        expect(new Map(totals)).toEqual(new Map([
          ["many_a", yield* store.totals("many_a")],
          ["many_b", yield* store.totals("many_b")],
          ["many_c", yield* store.totals("many_c")]
        ]))
        expect(totals.get("many_a")).toMatchObject({ total: 3, succeeded: 1, failed: 1, pending: 1 })
        const times = yield* store.timeSpentOf(ids)
        expect(new Map(times)).toEqual(new Map([["many_a", yield* store.timeSpent("many_a")], ["many_c", yield* store.timeSpent("many_c")]]))
        expect((yield* store.totalsOf([])).size).toBe(0)
        expect((yield* store.timeSpentOf([])).size).toBe(0)
      }))

    test("census: jobs by state over every tenant, and the items still to run of queued and running jobs only", (store) =>
      Effect.gen(function*() {
        expect(yield* store.census).toEqual({ jobs: JobStore.emptyCensus(), pendingItems: 0 })
        const prompts = (n: number) => Array.from({ length: n }, (_, i): JobStore.NewItem => ({ input: `p${i}` }))
        yield* store.insert(job("c_queued", 3), prompts(3))
        yield* store.insert({ ...job("c_running", 5), tenant: "other" }, prompts(5))
        yield* store.insert(job("c_done", 4), prompts(4))
        yield* bringTo(store, "c_running", "running")
        yield* store.record("c_running", [outcome(0, "succeeded"), outcome(1, "failed")], 2000)
        // An ended job's unsettled items are not waiting for anything.
        yield* bringTo(store, "c_done", "stopped")
        expect(yield* store.census).toEqual({
          jobs: { ...JobStore.emptyCensus(), queued: 1, running: 1, stopped: 1 },
          pendingItems: 3 + 3
        })
      }))

    test("an idempotency key names one job per tenant, kept with its payload hash; states move as the table allows", (store) =>
      Effect.gen(function*() {
        const first = yield* store.insert({ ...job("job_b", 1), idempotencyKey: "k", payloadHash: "h1" }, [{ input: "x" }])
        expect(first.job.payloadHash).toBe("h1")
        // Another payload under the key: the store answers the first job with its hash; the caller judges.
        const again = yield* store.insert({ ...job("job_c", 1), idempotencyKey: "k", payloadHash: "h2" }, [{ input: "y" }])
        expect([first.created, again.created, again.job.id, again.job.payloadHash]).toEqual([true, false, "job_b", "h1"])
        expect(yield* store.get("job_c")).toBeUndefined()
        expect((yield* store.totals("job_b")).total).toBe(1)
        const otherTenant = yield* store.insert({ ...job("job_d", 1), tenant: "u", idempotencyKey: "k", payloadHash: "h2" }, [{ input: "x" }])
        expect(otherTenant.created).toBe(true)
        expect(yield* store.get("job_b", "u")).toBeUndefined()
        expect(yield* store.get("job_b", "t")).toMatchObject({ id: "job_b", tenant: "t" })
        // Without a key, nothing is deduplicated.
        const keyless = yield* store.insert(job("job_e", 1), [{ input: "x" }])
        expect(keyless.created).toBe(true)
        expect(yield* store.setState("job_b", "cancelled", { now: 5000, reason: "asked" })).toBe(true)
        expect(yield* store.setState("job_b", "finished", { now: 6000 })).toBe(false)
        expect(yield* store.get("job_b")).toMatchObject({ state: "cancelled", reason: "asked", finishedAt: 5000 })
        expect(yield* store.setState("job_e", "running", { now: 5000 })).toBe(true)
        expect((yield* store.unfinished).map((j) => j.id)).toEqual(["job_d", "job_e"])
        expect(yield* store.setState("job_nope", "running", { now: 5000 })).toBe(false)
      }))

    test("every move the transition table does not list is refused and changes nothing; every listed one is made", (store) =>
      Effect.gen(function*() {
        for (const from of Job.JobState.literals) {
          for (const to of Job.JobState.literals) {
            const id = `job_${from}_${to}`
            yield* store.insert(job(id, 1), [{ input: "x" }])
            yield* bringTo(store, id, from)
            const before = (yield* store.get(id))!
            expect(before.state).toBe(from)
            const moved = yield* store.setState(id, to, { now: 9000, reason: "moved" })
            expect([from, to, moved]).toEqual([from, to, Job.canMove(from, to)])
            const after = (yield* store.get(id))!
            if (!moved) expect(after).toEqual(before)
            else {
              expect(after).toMatchObject({ state: to, reason: "moved", finishedAt: Job.isTerminal(to) ? 9000 : undefined })
              // Set by the first start only.
              expect(after.startedAt).toBe(before.startedAt ?? (to === "running" ? 9000 : undefined))
            }
          }
        }
        // A replay reopens only a job that ended.
        yield* store.record("job_running_queued", [outcome(0, "failed")], 9000)
        expect(yield* store.reopenFailed("job_running_queued", 9500)).toBe(0)
        expect((yield* store.get("job_running_queued"))?.state).toBe("running")
        expect((yield* store.totals("job_running_queued")).failed).toBe(1)
      }))

    test("inserts with one key at once make one job; the others get it, without an error", (store) =>
      Effect.gen(function*() {
        // Enough items that the transactions overlap.
        const items = Array.from({ length: 2000 }, (_, i): JobStore.NewItem => ({ input: `p${i}` }))
        for (let round = 0; round < 5; round++) {
          const ids = [0, 1, 2].map((i) => `job_race_${round}_${i}`)
          const results = yield* Effect.forEach(
            ids,
            (id) => store.insert({ ...job(id, items.length), idempotencyKey: `race-${round}`, payloadHash: "h" }, items),
            { concurrency: "unbounded" }
          )
          expect(results.filter((r) => r.created)).toHaveLength(1)
          const winner = results.find((r) => r.created)!.job.id
          expect(results.map((r) => r.job.id)).toEqual([winner, winner, winner])
          for (const id of ids) expect((yield* store.totals(id)).total).toBe(id === winner ? items.length : 0)
        }
      }))

    test("what is kept as JSON comes back as it went in: spec, metadata, inputs, the three outputs", (store) =>
      Effect.gen(function*() {
        const spec: Job.Spec = {
          maxCost: 1.5,
          maxAttempts: 3,
          softLimitSeconds: 10,
          hardLimitSeconds: 20,
          itemTimeoutSeconds: 5,
          itemDeadlineSeconds: 7
        }
        const metadata = { "purpose": "test", "ünïcödé key": "日本語 🎉" }
        // Fields other than messages are the provider's, passed through.
        const request = {
          messages: [{ role: "user", content: "hi \"there\"" }] as const,
          max_tokens: 5,
          temperature: 0.2,
          response_format: { type: "json_object" }
        }
        const { job: inserted } = yield* store.insert({ ...job("job_json", 3), spec, metadata, priority: -3 }, [
          { input: "a prompt" },
          { input: request },
          { input: "x" }
        ])
        expect(yield* store.get("job_json")).toEqual(inserted)
        expect(inserted).toMatchObject({ spec, metadata, priority: -3, state: "queued", round: 0 })
        expect((yield* store.pending("job_json", 0, 3)).map((p) => p.input)).toEqual(["a prompt", request, "x"])
        const failure = { class: "RateLimited", message: "HTTP 429", status: 429 }
        yield* store.record("job_json", [
          { ...outcome(0, "succeeded"), output: { ...completion(0), finishReason: null } },
          { index: 1, status: "failed", output: failure, errorClass: "RateLimited", attempts: 5, durationMs: 1.5, cost: 0, tokens: 0 },
          { index: 2, status: "skipped", output: { reason: "budget reached" }, attempts: 0, durationMs: 0, cost: 0, tokens: 0 }
        ], 2000)
        const settled = yield* store.settled("job_json", -1, 10)
        expect(settled).toEqual([
          { ...outcome(0, "succeeded"), input: "a prompt", output: { ...completion(0), finishReason: null } },
          { index: 1, input: request, status: "failed", output: failure, errorClass: "RateLimited", attempts: 5, durationMs: 1.5, cost: 0, tokens: 0 },
          { index: 2, input: "x", status: "skipped", output: { reason: "budget reached" }, attempts: 0, durationMs: 0, cost: 0, tokens: 0 }
        ])
        expect(yield* store.deadLetters("job_json")).toEqual([settled[1]])
        expect((yield* store.settled("job_json", 0, 1)).map((s) => s.index)).toEqual([1])
      }))

    test("list: newest first, createdAt then id; a page ends where the next starts; per tenant and state", (store) =>
      Effect.gen(function*() {
        const times = [1000, 3000, 2000, 3000, 2000]
        for (const [i, createdAt] of times.entries()) yield* store.insert({ ...job(`job_l${i}`, 1), createdAt }, [{ input: "x" }])
        yield* store.insert({ ...job("job_other", 1), tenant: "u", createdAt: 5000 }, [{ input: "x" }])
        const all = yield* store.list({ tenant: "t", limit: 10 })
        expect(all.map((j) => j.id)).toEqual(["job_l3", "job_l1", "job_l4", "job_l2", "job_l0"])
        const pages: Array<Array<string>> = []
        let before: { createdAt: number, id: string } | undefined
        for (;;) {
          const page = yield* store.list({ tenant: "t", limit: 2, before })
          if (page.length === 0) break
          pages.push(page.map((j) => j.id))
          before = { createdAt: page.at(-1)!.createdAt, id: page.at(-1)!.id }
        }
        expect(pages).toEqual([["job_l3", "job_l1"], ["job_l4", "job_l2"], ["job_l0"]])
        yield* store.setState("job_l4", "cancelled", { now: 6000 })
        expect((yield* store.list({ tenant: "t", state: "cancelled", limit: 10 })).map((j) => j.id)).toEqual(["job_l4"])
        expect((yield* store.list({ tenant: "u", limit: 10 })).map((j) => j.id)).toEqual(["job_other"])
        expect((yield* store.unfinished).map((j) => j.id)).toEqual(["job_l0", "job_l2", "job_l1", "job_l3", "job_other"])
      }))

    test("events: numbered by the store per job, several jobs in one step; read after a given one; lastSeq(Of), lastEventOf", (store) =>
      Effect.gen(function*() {
        yield* store.insert(job("job_ev", 1), [{ input: "x" }])
        yield* store.insert(job("job_ev2", 1), [{ input: "y" }])
        expect(yield* store.lastSeq("job_ev")).toBe(0)
        expect(yield* store.events("job_ev", 0)).toEqual([])
        const append = (id: string, events: ReadonlyArray<JobStore.NewEvent>) =>
          Effect.map(store.appendEvents(new Map([[id, events]])), (lasts) => lasts.get(id))
        expect(yield* append("job_ev", [
          { type: "state", data: "{\"state\":\"queued\",\"at\":1}", at: 1 },
          { type: "progress", data: "{\"total\":1,\"at\":2}", at: 2 }
        ])).toBe(2)
        expect(yield* append("job_ev", [])).toBe(2)
        // Two jobs at once, each numbered on its own; a job not in the store is left out.
        const lasts = yield* store.appendEvents(new Map([
          ["job_ev2", [{ type: "state", data: "{}", at: 2 }]],
          ["job_ev", [{ type: "limit", data: "{\"limit\":4,\"at\":3}", at: 3 }]],
          ["job_none", [{ type: "state", data: "{}", at: 3 }]]
        ]))
        expect(Object.fromEntries(lasts)).toEqual({ job_ev2: 1, job_ev: 3 })
        expect(yield* store.events("job_none", 0)).toEqual([])
        expect(yield* store.lastSeq("job_ev")).toBe(3)
        expect(Object.fromEntries(yield* store.lastSeqOf(["job_ev", "job_ev2", "job_none", "job_ev"]))).toEqual({ job_ev: 3, job_ev2: 1 })
        yield* append("job_ev2", [{ type: "progress", data: "{\"total\":1,\"at\":4}", at: 4 }, { type: "state", data: "{}", at: 5 }])
        expect(Object.fromEntries(yield* store.lastEventOf(["job_ev", "job_ev2", "job_none"], "progress"))).toEqual({
          job_ev: { seq: 2, type: "progress", data: "{\"total\":1,\"at\":2}" },
          job_ev2: { seq: 2, type: "progress", data: "{\"total\":1,\"at\":4}" }
        })
        expect((yield* store.lastEventOf(["job_ev"], "item-failed")).size).toBe(0)
        expect(yield* store.events("job_ev", 1)).toEqual([
          { seq: 2, type: "progress", data: "{\"total\":1,\"at\":2}" },
          { seq: 3, type: "limit", data: "{\"limit\":4,\"at\":3}" }
        ])
        // Appends racing on one job (as from several service processes) get distinct, gapless numbers.
        yield* Effect.forEach(
          Array.from({ length: 8 }, (_, i) => i),
          (i) => append("job_ev", [{ type: "progress", data: `{"n":${i}}`, at: 10 + i }, { type: "limit", data: "{}", at: 10 + i }]),
          { concurrency: "unbounded", discard: true }
        )
        const stored = yield* store.events("job_ev", 3)
        expect(stored.map((e) => e.seq)).toEqual(Array.from({ length: 16 }, (_, i) => 4 + i))
        // Each append's two events stayed together.
        for (let i = 0; i < 16; i += 2) expect([stored[i]!.type, stored[i + 1]!.type]).toEqual(["progress", "limit"])
      }))

    test("insert stores the new job's first events with it, numbered from 1; appended ones follow; a job found by its key gets none", (store) =>
      Effect.gen(function*() {
        const first: ReadonlyArray<JobStore.NewEvent> = [{ type: "state", data: "{\"state\":\"queued\",\"at\":1}", at: 1 }]
        const { created } = yield* store.insert({ ...job("job_first", 1), idempotencyKey: "k-first" }, [{ input: "x" }], first)
        expect(created).toBe(true)
        expect(yield* store.events("job_first", 0)).toEqual([{ seq: 1, type: "state", data: "{\"state\":\"queued\",\"at\":1}" }])
        expect(yield* store.lastSeq("job_first")).toBe(1)
        const lasts = yield* store.appendEvents(new Map([["job_first", [{ type: "state", data: "{\"state\":\"running\",\"at\":2}", at: 2 }]]]))
        expect(lasts.get("job_first")).toBe(2)
        // The same key again: that job, and no event added to it.
        const again = yield* store.insert({ ...job("job_first_again", 1), idempotencyKey: "k-first" }, [{ input: "x" }], first)
        expect(again).toMatchObject({ created: false, job: { id: "job_first" } })
        expect((yield* store.events("job_first", 0)).map((e) => e.seq)).toEqual([1, 2])
        expect(yield* store.events("job_first_again", 0)).toEqual([])
      }))
  })

/**
 * The SQL store on the database `client` gives: the common suite, plus what
 * only SQL has. `client` must give a new, empty database per build.
 */
export const sqlConformance = (name: string, client: Layer.Layer<SqlClient.SqlClient, unknown>, options: Options = {}) => {
  conformance(name, SqlJobStore.layer.pipe(Layer.provide(client)), options)

  describe.skipIf(options.skip === true)(`${name}: SqlJobStore`, () => {
    it.effect("a database made before payload hashes gets the column; its jobs are found by key, with no hash", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql.unsafe(tableWithoutPayloadHash)
        yield* sql.unsafe("CREATE UNIQUE INDEX effect_batch_jobs_idempotency ON effect_batch_jobs (tenant, idempotency_key)")
        yield* sql.unsafe(`INSERT INTO effect_batch_jobs (id, tenant, idempotency_key, state, profile, model, priority, spec,
          metadata, total, round, created_at, updated_at) VALUES ('job_old', 't', 'old-key', 'finished', 'p', 'm', 0, '{}', '{}', 0, 0, 500, 500)`)
        const store = yield* SqlJobStore.make
        expect(yield* store.get("job_old")).toMatchObject({ id: "job_old", idempotencyKey: "old-key", payloadHash: undefined, state: "finished" })
        const again = yield* store.insert({ ...job("job_new", 1), idempotencyKey: "old-key", payloadHash: "h" }, [{ input: "x" }])
        expect([again.created, again.job.id, again.job.payloadHash]).toEqual([false, "job_old", undefined])
        const fresh = yield* store.insert({ ...job("job_fresh", 1), idempotencyKey: "new-key", payloadHash: "h" }, [{ input: "x" }])
        expect(fresh.created).toBe(true)
        expect((yield* store.get("job_fresh"))?.payloadHash).toBe("h")
        // Versioned now; starting again on the migrated database changes nothing.
        expect(yield* versionIn(sql)).toEqual([{ key: "schema_version", value: String(SqlJobStore.schemaVersion) }])
        yield* SqlJobStore.make
        expect((yield* store.get("job_fresh"))?.payloadHash).toBe("h")
      }).pipe(Effect.provide(client)))

    it.effect("a database made by the version before schema versions (no meta table) is upgraded in place: rows kept, version written", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SqlJobStore.make
        yield* store.insert({ ...job("job_kept", 1), idempotencyKey: "kept", payloadHash: "h" }, [{ input: "x" }])
        // What that version left: the same tables, without effect_batch_jobs_meta.
        yield* sql`DROP TABLE effect_batch_jobs_meta`
        const upgraded = yield* SqlJobStore.make
        expect(yield* versionIn(sql)).toEqual([{ key: "schema_version", value: String(SqlJobStore.schemaVersion) }])
        expect(yield* upgraded.get("job_kept")).toMatchObject({ id: "job_kept", idempotencyKey: "kept", payloadHash: "h" })
        expect((yield* upgraded.pending("job_kept", 0, 1)).map((p) => p.input)).toEqual(["x"])
      }).pipe(Effect.provide(client)))

    it.effect("a version 1 database (before time spent was kept) is brought to the current version: the time table made, rows kept", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SqlJobStore.make
        yield* store.insert(job("job_v1", 1), [{ input: "x" }])
        yield* sql`DROP TABLE effect_batch_job_time`
        yield* sql`UPDATE effect_batch_jobs_meta SET value = '1' WHERE key = 'schema_version'`
        const upgraded = yield* SqlJobStore.make
        expect(yield* versionIn(sql)).toEqual([{ key: "schema_version", value: String(SqlJobStore.schemaVersion) }])
        expect(yield* upgraded.timeSpent("job_v1")).toBeUndefined()
        yield* upgraded.addTimeSpent("job_v1", { ...spent, items: 1 })
        expect(yield* upgraded.timeSpent("job_v1")).toEqual({ ...spent, items: 1 })
        expect((yield* upgraded.get("job_v1"))?.id).toBe("job_v1")
      }).pipe(Effect.provide(client)))

    it.effect("a version 2 database (before counts were kept) gets them: each job's items counted once, then kept by the triggers", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SqlJobStore.make
        yield* store.insert(job("job_v2", 3), [{ input: "x" }, { input: "y" }, { input: "{", rejected: "in.jsonl:3: invalid JSON" }])
        yield* store.insert(job("job_v2_empty", 0), [])
        yield* store.record("job_v2", [outcome(0, "succeeded")], 2000)
        // What version 2 left: no counts, no triggers.
        for (const name of ["effect_batch_jobs_counted", "effect_batch_jobs_uncounted"]) yield* dropTrigger(sql, name, "effect_batch_jobs")
        for (const name of ["effect_batch_job_items_counted", "effect_batch_job_items_recounted", "effect_batch_job_items_uncounted"]) {
          yield* dropTrigger(sql, name, "effect_batch_job_items")
        }
        yield* sql`DROP TABLE effect_batch_job_totals`
        yield* sql`UPDATE effect_batch_jobs_meta SET value = '2' WHERE key = 'schema_version'`
        // Written while no trigger counted it: the count at the upgrade sees it.
        yield* store.record("job_v2", [outcome(1, "failed")], 2500)
        const upgraded = yield* SqlJobStore.make
        expect(yield* versionIn(sql)).toEqual([{ key: "schema_version", value: String(SqlJobStore.schemaVersion) }])
        const counted = yield* upgraded.totalsOf(["job_v2", "job_v2_empty"])
        expect(counted.get("job_v2")).toEqual({ total: 3, succeeded: 1, failed: 2, skipped: 0, pending: 0, cost: 0.001, tokens: 10 })
        expect(counted.get("job_v2_empty")).toEqual(JobStore.noTotals)
        yield* upgraded.record("job_v2", [outcome(1, "succeeded")], 3000)
        expect(yield* upgraded.totals("job_v2")).toMatchObject({ succeeded: 2, failed: 1, tokens: 20 })
        // Starting again on the upgraded database counts nothing twice.
        yield* SqlJobStore.make
        expect(yield* upgraded.totals("job_v2")).toMatchObject({ total: 3, succeeded: 2, failed: 1, tokens: 20 })
      }).pipe(Effect.provide(client)))

    it.effect("counts follow rows deleted by hand (an operator's SQL): an item's leave its job's totals, a job's row its counts", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SqlJobStore.make
        yield* store.insert(job("job_del", 3), [{ input: "x" }, { input: "y" }, { input: "z" }])
        yield* store.record("job_del", [outcome(0, "succeeded"), outcome(1, "failed")], 2000)
        yield* sql`DELETE FROM effect_batch_job_items WHERE job_id = 'job_del' AND idx IN (0, 2)`
        expect(yield* store.totals("job_del")).toEqual({ total: 1, succeeded: 0, failed: 1, skipped: 0, pending: 0, cost: 0, tokens: 0 })
        yield* sql`DELETE FROM effect_batch_job_items WHERE job_id = 'job_del'`
        yield* sql`DELETE FROM effect_batch_jobs WHERE id = 'job_del'`
        expect(yield* sql`SELECT job_id FROM effect_batch_job_totals WHERE job_id = 'job_del'`).toEqual([])
        expect((yield* store.totalsOf(["job_del"])).size).toBe(0)
      }).pipe(Effect.provide(client)))

    it.effect("a database with a newer or unknown schema version is refused, naming the version found and the one supported, and left as it was", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SqlJobStore.make
        yield* store.insert(job("job_future", 1), [{ input: "x" }])
        for (const found of [String(SqlJobStore.schemaVersion + 1), "7", "2.0-beta"]) {
          yield* sql`UPDATE effect_batch_jobs_meta SET value = ${found} WHERE key = 'schema_version'`
          const error = yield* Effect.flip(SqlJobStore.make)
          expect(error).toMatchObject({ _tag: "JobStoreError", operation: "setup" })
          expect(error.cause).toBeInstanceOf(SqlJobStore.UnsupportedSchemaVersion)
          expect(error.cause).toMatchObject({ found, supported: SqlJobStore.schemaVersion })
          expect(error.message).toBe(
            `JobStore.setup failed: effect_batch_jobs_meta says schema version ${found}, and this effect-batch reads version ` +
              `${SqlJobStore.schemaVersion}: upgrade effect-batch, or use another database`
          )
          expect(yield* versionIn(sql)).toEqual([{ key: "schema_version", value: found }])
        }
        // The rows are as they were.
        expect(yield* sql`SELECT id, state FROM effect_batch_jobs`).toEqual([{ id: "job_future", state: "queued" }])
      }).pipe(Effect.provide(client)))

    it.effect("a stored value that does not decode fails the read with a JobStoreError naming the operation", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const store = yield* SqlJobStore.make
        yield* store.insert(job("job_bad", 2), [{ input: "x" }, { input: "y" }])
        yield* sql`UPDATE effect_batch_job_items SET input = '{"messages":[]}' WHERE job_id = 'job_bad' AND idx = 1`
        const error = yield* Effect.flip(store.pending("job_bad", 0, 2))
        expect(error).toMatchObject({ _tag: "JobStoreError", operation: "pending" })
        expect(error.message).toMatch(/^JobStore\.pending failed: /)
        yield* sql`UPDATE effect_batch_jobs SET state = 'paused' WHERE id = 'job_bad'`
        expect(yield* Effect.flip(store.get("job_bad"))).toMatchObject({ _tag: "JobStoreError", operation: "get" })
      }).pipe(Effect.provide(client)))
  })
}

const versionIn = (sql: SqlClient.SqlClient) => sql`SELECT key, value FROM effect_batch_jobs_meta`

const dropTrigger = (sql: SqlClient.SqlClient, name: string, table: string) =>
  sql.onDialectOrElse({
    pg: () => sql.unsafe(`DROP TRIGGER IF EXISTS ${name} ON ${table}`),
    orElse: () => sql.unsafe(`DROP TRIGGER IF EXISTS ${name}`)
  })

/** The jobs table as the version before payload hashes made it. */
const tableWithoutPayloadHash = `CREATE TABLE effect_batch_jobs (
  id TEXT PRIMARY KEY,
  tenant TEXT NOT NULL,
  idempotency_key TEXT,
  state TEXT NOT NULL,
  reason TEXT,
  profile TEXT NOT NULL,
  model TEXT NOT NULL,
  priority INTEGER NOT NULL,
  spec TEXT NOT NULL,
  metadata TEXT NOT NULL,
  total BIGINT NOT NULL,
  round INTEGER NOT NULL,
  created_at BIGINT NOT NULL,
  started_at BIGINT,
  finished_at BIGINT,
  updated_at BIGINT NOT NULL
)`
