/**
 * The contract every `CheckpointStore` backend meets, run by each backend's
 * test file. Tests share one store per suite, so each uses its own run ids
 * (prefixed with the test's topic). Each test runs on its own `TestClock`,
 * so the times a store records are known exactly.
 */
import { SqlClient } from "@effect/sql/SqlClient"
import { describe, expect, it, layer } from "@effect/vitest"
import { Cause, Effect, Exit, FastCheck, Layer, Option, TestClock, TestContext } from "effect"
import * as CheckpointStore from "../../src/CheckpointStore.js"
import * as SqlCheckpointStore from "../../src/sql/SqlCheckpointStore.js"

export interface Options {
  /** Reports the suite as skipped (e.g. no database configured). */
  readonly skip?: boolean
  /** The store outlives a build of its layer: test that a fresh build reads what an earlier one wrote. */
  readonly persistent?: boolean
}

/** 2025-01-02T03:04:05.678Z: past 2^32, so a BIGINT that came back as a string or was cut would show. */
export const start = Date.UTC(2025, 0, 2, 3, 4, 5, 678)

export const nested = {
  text: "héllo — 日本語 🎉 \"quoted\" \\ back\nslash",
  nul: "a\u0000b",
  loneSurrogate: "x\ud800y",
  empty: "",
  numbers: [0, -1.5, 1e300, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER, 5e-324],
  flags: [true, false],
  nothing: null,
  deep: { a: [{ b: [[], {}, [null, { c: "d" }]] }] },
  unusualKeys: { "with spaces and ünïcödé": 1, "": "empty key" }
}

const succeeded = (index: number, value: unknown, extra: Partial<CheckpointStore.OutcomeRecord> = {}): CheckpointStore.OutcomeRecord => ({
  itemKey: `${index}:key`,
  index,
  status: "succeeded",
  value,
  attempts: 1,
  durationMs: 10,
  ...extra
})

const failed = (index: number, extra: Partial<CheckpointStore.OutcomeRecord> = {}): CheckpointStore.OutcomeRecord => ({
  itemKey: `${index}:key`,
  index,
  status: "failed",
  error: { tag: "Permanent", message: "HTTP 400: bad request", status: 400, code: "invalid_request" },
  errorClass: "Permanent",
  attempts: 1,
  durationMs: 5,
  ...extra
})

const zero = { succeeded: 0, failed: 0, skipped: 0 }

export const conformance = (name: string, store: Layer.Layer<CheckpointStore.CheckpointStore, unknown>, options: Options = {}) =>
  describe.skipIf(options.skip === true)(name, () => {
    layer(store, { excludeTestServices: true })((it) => {
      /** A test on a fresh TestClock set to `start`. */
      const test = (title: string, body: () => Effect.Effect<void, unknown, CheckpointStore.CheckpointStore>) =>
        it.effect(title, () =>
          Effect.zipRight(TestClock.setTime(start), Effect.suspend(body)).pipe(Effect.provide(TestContext.TestContext)))

      test("open creates a running run with no outcomes", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          const meta = { argv: ["run", "in.jsonl", "--model", "m"], note: "ünïcödé" }
          const created = yield* store.open("open/new", { fingerprint: "fp-1", total: 3, meta })
          expect(created).toEqual({
            runId: "open/new",
            fingerprint: "fp-1",
            createdAt: start,
            updatedAt: start,
            state: "running",
            total: 3,
            meta,
            counts: zero,
            cost: 0
          })
          expect(yield* store.get("open/new")).toEqual(Option.some(created))
          expect((yield* store.load("open/new")).size).toBe(0)

          const bare = yield* store.open("open/bare", { fingerprint: "" })
          expect(Object.keys(bare).sort()).toEqual(["cost", "counts", "createdAt", "fingerprint", "runId", "state", "updatedAt"])
          expect(yield* store.get("open/never")).toEqual(Option.none())
        }))

      test("reopening with the same fingerprint resumes: running again, outcomes, total and meta kept", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          yield* store.open("resume/a", { fingerprint: "fp", total: 10, meta: { v: 1 } })
          yield* store.record("resume/a", [succeeded(0, "zero"), failed(1)])
          yield* store.setState("resume/a", "stopped", "quota")
          yield* TestClock.adjust("1 minute")
          const resumed = yield* store.open("resume/a", { fingerprint: "fp" })
          expect(resumed).toEqual({
            runId: "resume/a",
            fingerprint: "fp",
            createdAt: start,
            updatedAt: start + 60_000,
            state: "running",
            total: 10,
            meta: { v: 1 },
            counts: { succeeded: 1, failed: 1, skipped: 0 },
            cost: 0
          })
          expect("reason" in resumed).toBe(false)
          expect([...(yield* store.load("resume/a")).keys()].sort()).toEqual(["0:key", "1:key"])

          const updated = yield* store.open("resume/a", { fingerprint: "fp", total: 12, meta: { v: 2 } })
          expect([updated.total, updated.meta, updated.createdAt]).toEqual([12, { v: 2 }, start])
        }))

      test("another fingerprint fails with CheckpointMismatch and changes nothing", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          yield* store.open("mismatch/a", { fingerprint: "fp-a", total: 2, meta: { m: 1 } })
          yield* store.record("mismatch/a", [succeeded(0, 0)])
          yield* store.setState("mismatch/a", "stopped", "budget")
          const before = Option.getOrThrow(yield* store.get("mismatch/a"))
          const outcomesBefore = yield* store.load("mismatch/a")
          yield* TestClock.adjust("1 hour")

          const error = yield* Effect.flip(store.open("mismatch/a", { fingerprint: "fp-b", total: 3, meta: { m: 2 } }))
          expect(error).toBeInstanceOf(CheckpointStore.CheckpointMismatch)
          expect(error).toMatchObject({ _tag: "CheckpointMismatch", runId: "mismatch/a", expected: "fp-a", found: "fp-b" })
          expect(error.message).toBe(
            "run \"mismatch/a\" was started with a different input (fingerprint \"fp-a\", now \"fp-b\"); resume it with its own input, or start another run (another id, or forget this one)"
          )
          expect(yield* store.get("mismatch/a")).toEqual(Option.some(before))
          expect(yield* store.load("mismatch/a")).toEqual(outcomesBefore)
        }))

      test("record and load round-trip every field", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          yield* store.open("roundtrip/a", { fingerprint: "fp" })
          const outcomes: ReadonlyArray<CheckpointStore.OutcomeRecord> = [
            succeeded(0, nested, { attempts: 3, durationMs: 1234.5, cost: 0.00125, tokens: 4096, recordedAt: start - 5 }),
            succeeded(1, null),
            { itemKey: "2:key", index: 2, status: "succeeded", attempts: 0, durationMs: 0 },
            succeeded(3, ["plain string", 42, -0.5, true, null, [], {}]),
            failed(4, { attempts: 5, durationMs: 99.25, cost: 0.5 }),
            { itemKey: "5:key", index: 5, status: "failed", error: { tag: "Transient", message: "" }, attempts: 2, durationMs: 1 },
            { itemKey: "6:key", index: 6, status: "skipped", reason: "interrupted", attempts: 0, durationMs: 0 },
            { itemKey: "ünïcödé 🎉 key", index: 2 ** 40, status: "skipped", reason: "quota", attempts: 0, durationMs: 0 }
          ]
          yield* store.record("roundtrip/a", outcomes)
          const loaded = yield* store.load("roundtrip/a")
          // recordedAt defaults to when record was called.
          const expected = outcomes.map((o) => ({ recordedAt: start, ...o }))
          expect(new Map(loaded)).toEqual(new Map(expected.map((o) => [o.itemKey, o])))
          expect("value" in loaded.get("2:key")!).toBe(false)
          expect(loaded.get("1:key")).toHaveProperty("value", null)
          for (const outcome of loaded.values()) {
            expect(Object.values(outcome)).not.toContain(undefined)
          }

          // What load returns is a copy.
          ;(loaded.get("0:key")!.value as { deep: { a: Array<unknown> } }).deep.a.push("mutated")
          expect((yield* store.load("roundtrip/a")).get("0:key")!.value).toEqual(nested)
        }))

      it.effect.prop(
        "any JSON value comes back as JSON.parse(JSON.stringify(value))",
        { value: FastCheck.jsonValue({ maxDepth: 4 }), meta: FastCheck.jsonValue({ maxDepth: 2 }) },
        ({ meta, value }) =>
          Effect.gen(function*() {
            yield* TestClock.setTime(start)
            const store = yield* CheckpointStore.CheckpointStore
            const info = yield* store.open("roundtrip/property", { fingerprint: "fp", meta })
            expect(info.meta).toEqual(JSON.parse(JSON.stringify(meta)))
            yield* store.record("roundtrip/property", [succeeded(0, value)])
            expect((yield* store.load("roundtrip/property")).get("0:key")!.value).toEqual(JSON.parse(JSON.stringify(value)))
          }).pipe(Effect.provide(TestContext.TestContext)),
        { fastCheck: { numRuns: 30 } }
      )

      test("an error keeps only tag, message, status and code", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          yield* store.open("error/fields", { fingerprint: "fp" })
          const error = { tag: "Transient", message: "boom", status: 502, cause: { big: "object" }, headers: {} }
          yield* store.record("error/fields", [failed(0, { error })])
          expect((yield* store.load("error/fields")).get("0:key")!.error).toEqual({ tag: "Transient", message: "boom", status: 502 })
        }))

      test("a later record for the same key replaces the earlier one, within a group too", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          yield* store.open("replace/a", { fingerprint: "fp" })
          yield* store.record("replace/a", [failed(0, { cost: 1 }), succeeded(1, "one")])
          yield* TestClock.adjust("1 second")
          yield* store.record("replace/a", [succeeded(0, { retried: true }, { attempts: 2, cost: 0.25 })])
          const loaded = yield* store.load("replace/a")
          expect(loaded.size).toBe(2)
          expect(loaded.get("0:key")).toEqual({
            itemKey: "0:key",
            index: 0,
            status: "succeeded",
            value: { retried: true },
            attempts: 2,
            durationMs: 10,
            cost: 0.25,
            recordedAt: start + 1000
          })
          yield* store.record("replace/a", [succeeded(2, "first"), failed(1), succeeded(2, "last")])
          const again = yield* store.load("replace/a")
          expect([again.size, again.get("1:key")!.status, again.get("2:key")!.value]).toEqual([3, "failed", "last"])
          expect(Option.getOrThrow(yield* store.get("replace/a"))).toMatchObject({
            counts: { succeeded: 2, failed: 1, skipped: 0 },
            cost: 0.25
          })
        }))

      test("list and get count outcomes by status and sum their cost", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          yield* store.open("counts/a", { fingerprint: "fp", total: 7 })
          yield* store.record("counts/a", [
            succeeded(0, 0, { cost: 0.25 }),
            succeeded(1, 1, { cost: 0.5 }),
            succeeded(2, 2),
            failed(3, { cost: 0.125 }),
            failed(4)
          ])
          yield* store.record("counts/a", [{ itemKey: "5:key", index: 5, status: "skipped", reason: "budget", attempts: 0, durationMs: 0 }])
          const info = Option.getOrThrow(yield* store.get("counts/a"))
          expect(info.counts).toEqual({ succeeded: 3, failed: 2, skipped: 1 })
          expect(info.cost).toBe(0.875)
          expect(info.total).toBe(7)
          expect((yield* store.list).find((run) => run.runId === "counts/a")).toEqual(info)
        }))

      test("setState sets the state and the reason, and updatedAt", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          yield* store.open("state/a", { fingerprint: "fp" })
          yield* TestClock.adjust("5 seconds")
          yield* store.setState("state/a", "stopped", "quota")
          expect(Option.getOrThrow(yield* store.get("state/a"))).toMatchObject({
            state: "stopped",
            reason: "quota",
            createdAt: start,
            updatedAt: start + 5000
          })
          yield* store.setState("state/a", "finished")
          const finished = Option.getOrThrow(yield* store.get("state/a"))
          expect(finished.state).toBe("finished")
          expect("reason" in finished).toBe(false)
          const error = yield* Effect.flip(store.setState("state/a", "paused" as CheckpointStore.State))
          expect(error).toMatchObject({ _tag: "CheckpointError", operation: "setState", runId: "state/a" })
          expect(error.message).toContain("state must be running, stopped or finished, got paused")
          expect(Option.getOrThrow(yield* store.get("state/a")).state).toBe("finished")
        }))

      test("record moves updatedAt", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          yield* store.open("updated/a", { fingerprint: "fp" })
          yield* TestClock.adjust("2 minutes")
          yield* store.record("updated/a", [succeeded(0, 0)])
          expect(Option.getOrThrow(yield* store.get("updated/a")).updatedAt).toBe(start + 120_000)
        }))

      test("list gives every run, most recently created first", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          // Far in the future of every other test's runs (and of the live clock), so these three come first.
          yield* TestClock.setTime(Date.UTC(2100, 0, 1))
          for (const runId of ["list/b", "list/c", "list/a"]) {
            yield* store.open(runId, { fingerprint: "fp" })
            yield* TestClock.adjust("1 second")
          }
          // Activity on an older run does not move it.
          yield* store.record("list/b", [succeeded(0, 0)])
          yield* store.setState("list/b", "finished")
          const runs = yield* store.list
          expect(runs.slice(0, 3).map((run) => run.runId)).toEqual(["list/a", "list/c", "list/b"])
          const created = runs.map((run) => run.createdAt)
          expect(created).toEqual([...created].sort((a, b) => b - a))
          expect(runs[2]).toEqual(Option.getOrThrow(yield* store.get("list/b")))
        }))

      test("forget removes the run and its outcomes, and no other run", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          for (const runId of ["forget/a", "forget/b"]) {
            yield* store.open(runId, { fingerprint: "fp" })
            yield* store.record(runId, [succeeded(0, runId), failed(1)])
          }
          expect(yield* store.forget("forget/a")).toBe(true)
          expect(yield* store.get("forget/a")).toEqual(Option.none())
          expect((yield* store.list).map((run) => run.runId)).not.toContain("forget/a")
          expect(yield* Effect.flip(store.load("forget/a"))).toMatchObject({ _tag: "CheckpointError", operation: "load" })
          expect(yield* store.forget("forget/a")).toBe(false)
          expect(yield* store.forget("forget/never")).toBe(false)

          const other = yield* store.load("forget/b")
          expect([other.size, other.get("0:key")!.value]).toEqual([2, "forget/b"])
          expect(Option.getOrThrow(yield* store.get("forget/b")).counts).toEqual({ succeeded: 1, failed: 1, skipped: 0 })

          // Its outcomes are gone: a new run under the same id starts empty, whatever its fingerprint.
          const fresh = yield* store.open("forget/a", { fingerprint: "another" })
          expect(fresh.counts).toEqual(zero)
          expect((yield* store.load("forget/a")).size).toBe(0)
        }))

      test("saveShards upserts shard states by key, loadShards gives them back as JSON; forget deletes them", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          yield* store.open("shards/a", { fingerprint: "fp" })
          yield* store.open("shards/b", { fingerprint: "fp" })
          expect(yield* store.loadShards("shards/a")).toEqual([])
          yield* store.saveShards("shards/a", [
            { key: "0/0", state: { state: "planned", indices: [0, 1, 2] } },
            { key: "0/1", state: { state: "planned", indices: [3] } },
            { key: "0/0", state: { state: "uploaded", indices: [0, 1, 2], file: "file-1" } }
          ])
          yield* store.saveShards("shards/a", [{ key: "0/1", state: { state: "submitted", batch: "batch_1", nested } }])
          yield* store.saveShards("shards/b", [{ key: "0/0", state: "other run" }])
          const loaded = [...yield* store.loadShards("shards/a")].sort((x, y) => x.key < y.key ? -1 : 1)
          expect(loaded).toEqual([
            { key: "0/0", state: { state: "uploaded", indices: [0, 1, 2], file: "file-1" } },
            { key: "0/1", state: JSON.parse(JSON.stringify({ state: "submitted", batch: "batch_1", nested })) }
          ])
          expect(yield* store.forget("shards/a")).toBe(true)
          yield* store.open("shards/a", { fingerprint: "fp" })
          expect(yield* store.loadShards("shards/a")).toEqual([])
          expect(yield* store.loadShards("shards/b")).toEqual([{ key: "0/0", state: "other run" }])
        }))

      test("saveShards refuses a bad key or a state that is not JSON, naming it, and stores nothing of the group", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          yield* store.open("shards/bad", { fingerprint: "fp" })
          const empty = yield* Effect.flip(store.saveShards("shards/bad", [{ key: "ok", state: 1 }, { key: "", state: 1 }]))
          expect(empty.message).toContain("shard 1: key must be a string of 1 to 200 characters, got \"\"")
          const notJson = yield* Effect.flip(store.saveShards("shards/bad", [{ key: "fn", state: () => 1 }]))
          expect(notJson.message).toContain("shard \"fn\" is not JSON")
          expect(yield* store.loadShards("shards/bad")).toEqual([])
          const unknown = yield* Effect.flip(store.saveShards("shards/never", [{ key: "k", state: 1 }]))
          expect(unknown).toMatchObject({ _tag: "CheckpointError", operation: "saveShards" })
          expect(yield* Effect.flip(store.loadShards("shards/never"))).toMatchObject({ _tag: "CheckpointError", operation: "loadShards" })
        }))

      test("record, load and setState on an unknown run fail with a CheckpointError and store nothing", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          const error = yield* Effect.flip(store.record("unknown/a", [succeeded(0, 0)]))
          expect(error).toBeInstanceOf(CheckpointStore.CheckpointError)
          expect(error).toMatchObject({ operation: "record", runId: "unknown/a" })
          expect(error.message).toBe(
            "CheckpointStore.record (run \"unknown/a\") failed: there is no run \"unknown/a\" (open it first; it may have been forgotten)"
          )
          expect(yield* Effect.flip(store.load("unknown/a"))).toMatchObject({ _tag: "CheckpointError", operation: "load" })
          expect(yield* Effect.flip(store.setState("unknown/a", "finished"))).toMatchObject({
            _tag: "CheckpointError",
            operation: "setState"
          })
          expect(yield* store.get("unknown/a")).toEqual(Option.none())
          expect((yield* store.list).map((run) => run.runId)).not.toContain("unknown/a")
          expect((yield* store.open("unknown/a", { fingerprint: "fp" })).counts).toEqual(zero)
          expect((yield* store.load("unknown/a")).size).toBe(0)
        }))

      test("an invalid outcome fails its whole group, naming it, and stores none of it", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          yield* store.open("invalid/a", { fingerprint: "fp" })
          yield* store.record("invalid/a", [succeeded(0, "kept")])
          const cyclic: Record<string, unknown> = {}
          cyclic.self = cyclic
          const cases: ReadonlyArray<readonly [Partial<CheckpointStore.OutcomeRecord>, string]> = [
            [{ index: -1 }, "outcome 1 (item \"1:key\"): index must be an integer ≥ 0, got -1"],
            [{ index: 1.5 }, "index must be an integer ≥ 0, got 1.5"],
            [{ itemKey: "" }, "outcome 1: itemKey must be a non-empty string"],
            [{ status: "done" as CheckpointStore.Status }, "status must be succeeded, failed or skipped, got done"],
            [{ attempts: -1 }, "attempts must be an integer ≥ 0"],
            [{ durationMs: Number.NaN }, "durationMs must be a finite number ≥ 0, got NaN"],
            [{ cost: Number.POSITIVE_INFINITY }, "cost must be a finite number ≥ 0"],
            [{ tokens: 1.5 }, "tokens must be an integer ≥ 0"],
            [{ value: 10n }, "value is not JSON"],
            [{ value: cyclic }, "value is not JSON"],
            [{ value: () => 1 }, "value is not JSON (a function)"],
            [{ error: { tag: "X" } as CheckpointStore.OutcomeError }, "error must be { tag: string, message: string"],
            [{ errorClass: 5 as unknown as string }, "errorClass must be a string"]
          ]
          for (const [change, message] of cases) {
            const error = yield* Effect.flip(store.record("invalid/a", [succeeded(2, "valid"), { ...succeeded(1, "v"), ...change }]))
            expect(error).toMatchObject({ _tag: "CheckpointError", operation: "record", runId: "invalid/a" })
            expect(error.cause).toBeInstanceOf(Cause.IllegalArgumentException)
            expect(error.message).toContain(message)
          }
          expect([...(yield* store.load("invalid/a")).keys()]).toEqual(["0:key"])
        }))

      test("open rejects a fingerprint that is not a string, a bad total and meta that is not JSON", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          const cases: ReadonlyArray<readonly [CheckpointStore.OpenOptions, string]> = [
            [{ fingerprint: 1 as unknown as string }, "fingerprint must be a string, got number"],
            [{ fingerprint: "fp", total: -1 }, "total must be an integer ≥ 0, got -1"],
            [{ fingerprint: "fp", meta: { n: 1n } }, "meta is not JSON"]
          ]
          for (const [options, message] of cases) {
            const error = yield* Effect.flip(store.open("badopen/a", options))
            expect(error).toMatchObject({ _tag: "CheckpointError", operation: "open", runId: "badopen/a" })
            expect(error.message).toContain(message)
          }
          expect(yield* store.get("badopen/a")).toEqual(Option.none())
        }))

      test("5 000 outcomes recorded in groups of 500 load back complete", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          yield* store.open("many/a", { fingerprint: "fp", total: 5000 })
          const all = Array.from({ length: 5000 }, (_, i) =>
            i % 10 === 9 ? failed(i, { cost: 0.5 }) : succeeded(i, { i, text: `answer ${i} ✓` }, { cost: 0.25, tokens: i }))
          for (let i = 0; i < all.length; i += 500) yield* store.record("many/a", all.slice(i, i + 500))
          const loaded = yield* store.load("many/a")
          expect(loaded.size).toBe(5000)
          for (const outcome of all) expect(loaded.get(outcome.itemKey)).toEqual({ recordedAt: start, ...outcome })
          const info = Option.getOrThrow(yield* store.get("many/a"))
          expect(info.counts).toEqual({ succeeded: 4500, failed: 500, skipped: 0 })
          expect(info.cost).toBe(4500 * 0.25 + 500 * 0.5)
        }))

      test("concurrent records on different runs do not interfere", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          const runIds = ["concurrent/a", "concurrent/b", "concurrent/c", "concurrent/d"]
          yield* Effect.forEach(runIds, (runId) => store.open(runId, { fingerprint: runId }), { concurrency: "unbounded" })
          const groups = runIds.flatMap((runId) =>
            Array.from({ length: 5 }, (_, g) => ({
              runId,
              outcomes: Array.from({ length: 100 }, (_, i) => succeeded(g * 100 + i, { runId, i: g * 100 + i }))
            })))
          yield* Effect.forEach(groups, ({ outcomes, runId }) => store.record(runId, outcomes), { concurrency: "unbounded", discard: true })
          for (const runId of runIds) {
            const loaded = yield* store.load(runId)
            expect(loaded.size).toBe(500)
            for (const outcome of loaded.values()) expect(outcome.value).toEqual({ runId, i: outcome.index })
            expect(Option.getOrThrow(yield* store.get(runId)).counts.succeeded).toBe(500)
          }
        }))

      test("a run id that is empty, too long, unprintable or padded is rejected by every method", () =>
        Effect.gen(function*() {
          const store = yield* CheckpointStore.CheckpointStore
          const bad = ["", "x".repeat(201), "line\nbreak", "tab\there", "bell\u0007", "del\u007f", "lone\ud800", " padded", "padded "]
          for (const runId of bad) {
            const errors = [
              yield* Effect.flip(store.open(runId, { fingerprint: "fp" })),
              yield* Effect.flip(store.record(runId, [])),
              yield* Effect.flip(store.load(runId)),
              yield* Effect.flip(store.setState(runId, "finished")),
              yield* Effect.flip(store.get(runId)),
              yield* Effect.flip(store.forget(runId))
            ]
            expect(errors.map((e) => e._tag === "CheckpointError" && e.operation)).toEqual(["open", "record", "load", "setState", "get", "forget"])
            for (const error of errors) expect(error.message).toMatch(/failed: the run id must /)
          }
          expect((yield* Effect.flip(store.open("", { fingerprint: "fp" }))).message).toContain("the run id must not be empty")
          expect((yield* Effect.flip(store.open("x".repeat(201), { fingerprint: "fp" }))).message)
            .toContain("the run id must have at most 200 characters, got 201")
          for (const runId of ["x".repeat(200), "🎉".repeat(200), "2025-01-02 nightly/ünïcödé #3"]) {
            expect((yield* store.open(runId, { fingerprint: "fp" })).runId).toBe(runId)
            expect(yield* store.forget(runId)).toBe(true)
          }
        }))

      if (options.persistent === true) {
        test("a fresh build of the layer reads what an earlier build wrote", () =>
          Effect.gen(function*() {
            yield* CheckpointStore.CheckpointStore.pipe(
              Effect.flatMap((store) =>
                Effect.zipRight(
                  store.open("persist/a", { fingerprint: "fp", total: 2, meta: nested }),
                  store.record("persist/a", [succeeded(0, nested, { cost: 0.5 }), failed(1)])
                )),
              Effect.provide(store)
            )
            const [info, loaded] = yield* CheckpointStore.CheckpointStore.pipe(
              Effect.flatMap((store) => Effect.all([store.get("persist/a"), store.load("persist/a")])),
              Effect.provide(store)
            )
            expect(Option.getOrThrow(info)).toMatchObject({ meta: nested, total: 2, counts: { succeeded: 1, failed: 1 }, cost: 0.5 })
            expect(loaded.get("0:key")).toEqual({ ...succeeded(0, nested, { cost: 0.5 }), recordedAt: start })
            expect(loaded.get("1:key")).toEqual({ ...failed(1), recordedAt: start })
          }))
      }
    })
  })

/** The prefixes `sqlConformance` uses besides its own: drop their tables too. */
export const extraPrefixes = (prefix: string): ReadonlyArray<string> =>
  ["version_", "columns_", "extra_", "unversioned_", "gone_", "noshards_"].map((suffix) => `${prefix}${suffix}`)

/** Drops the tables of the store with `prefix`, if they exist. */
export const dropTables = (prefix: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    for (const table of ["shards", "outcomes", "runs", "meta"]) yield* sql`DROP TABLE IF EXISTS ${sql(`${prefix}${table}`)}`
  })

/**
 * The contract of `SqlCheckpointStore.layer` on the client `client`
 * provides: the common suite on tables with `prefix`, plus the SQL-only
 * checks (on tables with prefixes from `extraPrefixes`).
 */
export const sqlConformance = (
  name: string,
  client: Layer.Layer<SqlClient, unknown>,
  options: { readonly prefix: string, readonly skip?: boolean }
) => {
  const store = SqlCheckpointStore.layer({ prefix: options.prefix }).pipe(Layer.provide(client))
  conformance(name, store, { persistent: true, ...(options.skip === undefined ? {} : { skip: options.skip }) })

  const [version, columns, extra, unversioned, gone, noShards] = extraPrefixes(options.prefix)
  /** The failure of building a store on tables with `prefix`. */
  const buildFailure = (prefix: string) =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Layer.build(SqlCheckpointStore.layer({ prefix })).pipe(Effect.scoped))
      expect(Exit.isFailure(exit)).toBe(true)
      const error = Option.getOrThrow(Cause.failureOption((exit as Exit.Failure<unknown, CheckpointStore.CheckpointError>).cause))
      expect(error).toBeInstanceOf(CheckpointStore.CheckpointError)
      expect(error.operation).toBe("setup")
      return error
    })

  describe.skipIf(options.skip === true)(`${name}: SqlCheckpointStore`, () => {
    it("a prefix that is not a plain identifier throws, naming the option and the value", () => {
      for (const prefix of ["x; DROP TABLE users; --", "", "1x_", "my-prefix", "public.x", "\"q\"", "a".repeat(56)]) {
        expect(() => SqlCheckpointStore.layer({ prefix })).toThrow(/^SqlCheckpointStore\.layer: prefix must be a plain identifier/)
        expect(() => SqlCheckpointStore.layer({ prefix })).toThrow(JSON.stringify(prefix))
      }
      expect(() => SqlCheckpointStore.layer({ prefix: `A_${"b".repeat(53)}` })).not.toThrow()
    })

    it.live("tables with another schema version are refused, and left alone", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* Layer.build(SqlCheckpointStore.layer({ prefix: version! })).pipe(Effect.scoped)
        yield* sql`UPDATE ${sql(`${version}meta`)} SET value = '2' WHERE key = 'checkpoint_schema_version'`
        const error = yield* buildFailure(version!)
        expect(error.message).toBe(
          `the checkpoint store could not be set up: ${version}meta says schema version 2: this is not a database of ` +
            "effect-batch's checkpoint store (schema version 1); use another database or another table prefix"
        )
        const rows = yield* sql<{ value: string }>`SELECT value FROM ${sql(`${version}meta`)}`
        expect(rows).toEqual([{ value: "2" }])
      }).pipe(Effect.provide(client)))

    it.live("tables with other columns are refused, naming what differs", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* sql`CREATE TABLE ${sql(`${columns}runs`)} (id INTEGER PRIMARY KEY, name TEXT)`
        const error = yield* buildFailure(columns!)
        expect(error.message).toContain(
          `table ${columns}runs lacks run_id, fingerprint, state, reason, total, meta, created_at, updated_at and has unknown columns id, name`
        )
        expect(error.message).toContain("this is not a database of effect-batch's checkpoint store")

        yield* Layer.build(SqlCheckpointStore.layer({ prefix: extra! })).pipe(Effect.scoped)
        yield* sql`ALTER TABLE ${sql(`${extra}outcomes`)} ADD COLUMN note TEXT`
        expect((yield* buildFailure(extra!)).message).toContain(`table ${extra}outcomes has unknown columns note`)
      }).pipe(Effect.provide(client)))

    it.live("tables of the right shape without a schema version are refused", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* Layer.build(SqlCheckpointStore.layer({ prefix: unversioned! })).pipe(Effect.scoped)
        yield* sql`DROP TABLE ${sql(`${unversioned}meta`)}`
        expect((yield* buildFailure(unversioned!)).message).toContain(
          `${unversioned}runs and ${unversioned}outcomes exist but ${unversioned}meta holds no schema version`
        )
      }).pipe(Effect.provide(client)))

    it.live("building twice on existing tables keeps their rows", () =>
      Effect.gen(function*() {
        const twice = SqlCheckpointStore.layer({ prefix: options.prefix }).pipe(Layer.provide(client))
        yield* CheckpointStore.CheckpointStore.pipe(
          Effect.flatMap((store) => Effect.zipRight(store.open("twice/a", { fingerprint: "fp" }), store.record("twice/a", [succeeded(0, 1)]))),
          Effect.provide(twice)
        )
        const loaded = yield* CheckpointStore.CheckpointStore.pipe(Effect.flatMap((store) => store.load("twice/a")), Effect.provide(twice))
        expect(loaded.size).toBe(1)
      }))

    it.live("a database made before the shards table gets it, and keeps its runs", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient
        const layer = SqlCheckpointStore.layer({ prefix: noShards! })
        const use = <A, E>(f: (store: CheckpointStore.Store) => Effect.Effect<A, E>) =>
          Effect.flatMap(CheckpointStore.CheckpointStore, f).pipe(Effect.provide(layer))
        yield* use((store) => Effect.zipRight(store.open("old/a", { fingerprint: "fp" }), store.record("old/a", [succeeded(0, "kept")])))
        yield* sql`DROP TABLE ${sql(`${noShards}shards`)}`
        yield* use((store) => store.saveShards("old/a", [{ key: "0/0", state: { state: "planned" } }]))
        expect(yield* use((store) => store.loadShards("old/a"))).toEqual([{ key: "0/0", state: { state: "planned" } }])
        expect((yield* use((store) => store.load("old/a"))).get("0:key")?.value).toBe("kept")
      }).pipe(Effect.provide(client)))

    it.live("when the tables are gone, every operation fails with a CheckpointError carrying the driver's message", () =>
      Effect.gen(function*() {
        const store = yield* CheckpointStore.CheckpointStore
        yield* store.open("gone/a", { fingerprint: "fp" })
        yield* dropTables(gone!)
        const errors = [
          yield* Effect.flip(store.open("gone/a", { fingerprint: "fp" })),
          yield* Effect.flip(store.record("gone/a", [succeeded(0, 0)])),
          yield* Effect.flip(store.load("gone/a")),
          yield* Effect.flip(store.setState("gone/a", "finished")),
          yield* Effect.flip(store.list),
          yield* Effect.flip(store.get("gone/a")),
          yield* Effect.flip(store.forget("gone/a"))
        ]
        expect(errors.map((e) => e._tag === "CheckpointError" && e.operation)).toEqual([
          "open", "record", "load", "setState", "list", "get", "forget"
        ])
        for (const error of errors) {
          expect(error.cause).toMatchObject({ _tag: "SqlError" })
          expect(error.message).toMatch(/(no such table|does not exist)/)
        }
      }).pipe(Effect.provide(SqlCheckpointStore.layer({ prefix: gone! }).pipe(Layer.provideMerge(client)))))
  })
}
