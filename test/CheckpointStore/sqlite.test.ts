import { SqliteClient } from "@effect/sql-sqlite-node"
import { SqlClient } from "@effect/sql/SqlClient"
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Layer, Option } from "effect"
import { randomBytes } from "node:crypto"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as CheckpointStore from "../../src/CheckpointStore.js"
import * as SqlCheckpointStore from "../../src/sql/SqlCheckpointStore.js"
import { sqlConformance } from "./conformance.js"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-checkpoint-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

sqlConformance("SqlCheckpointStore.layer (SQLite)", SqliteClient.layer({ filename: join(dir, "conformance.db") }), {
  prefix: "effect_batch_"
})

/** The failure of building the store on `client`. */
const setupFailure = (client: Layer.Layer<SqlClient, unknown>) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(Layer.build(SqlCheckpointStore.layer().pipe(Layer.provide(client))).pipe(Effect.scoped))
    return Exit.isFailure(exit) ? exit.cause : Cause.empty
  })

describe("SqlCheckpointStore.layer (SQLite): the file", () => {
  it.live("turns on WAL and synchronous = NORMAL when the layer starts", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient
      // The client is told not to set WAL itself, and synchronous is set to FULL explicitly (better-sqlite3's build
      // would otherwise pick NORMAL by itself once WAL is on), so what follows is the store's doing.
      yield* sql`PRAGMA synchronous = FULL`
      expect(yield* sql`PRAGMA journal_mode`).toEqual([{ journal_mode: "delete" }])
      yield* Layer.build(SqlCheckpointStore.layer()).pipe(Effect.scoped)
      expect(yield* sql`PRAGMA journal_mode`).toEqual([{ journal_mode: "wal" }])
      // 1 is NORMAL (the default is 2, FULL).
      expect(yield* sql`PRAGMA synchronous`).toEqual([{ synchronous: 1 }])
    }).pipe(Effect.provide(SqliteClient.layer({ filename: join(dir, "wal.db"), disableWAL: true }))))

  it.live("a run survives: a fresh client and layer on the same file resume it", () =>
    Effect.gen(function*() {
      const fresh = () => SqlCheckpointStore.layer().pipe(Layer.provide(SqliteClient.layer({ filename: join(dir, "resume.db") })))
      const outcomes: ReadonlyArray<CheckpointStore.OutcomeRecord> = Array.from({ length: 1200 }, (_, i) => ({
        itemKey: `${i}:k`,
        index: i,
        status: "succeeded",
        value: { answer: `réponse ${i}` },
        attempts: 1,
        durationMs: 3,
        cost: 0.5
      }))
      yield* Effect.gen(function*() {
        const store = yield* CheckpointStore.CheckpointStore
        yield* store.open("nightly", { fingerprint: "fp", total: 2000, meta: { argv: ["run", "in.jsonl"] } })
        yield* store.record("nightly", outcomes.slice(0, 700))
        yield* store.record("nightly", outcomes.slice(700))
        yield* store.setState("nightly", "stopped", "interrupted")
      }).pipe(Effect.provide(fresh()))

      const [resumed, loaded] = yield* Effect.gen(function*() {
        const store = yield* CheckpointStore.CheckpointStore
        const resumed = yield* store.open("nightly", { fingerprint: "fp" })
        return [resumed, yield* store.load("nightly")] as const
      }).pipe(Effect.provide(fresh()))
      expect(resumed).toMatchObject({
        state: "running",
        total: 2000,
        meta: { argv: ["run", "in.jsonl"] },
        counts: { succeeded: 1200, failed: 0, skipped: 0 },
        cost: 600
      })
      expect(loaded.size).toBe(1200)
      expect(loaded.get("1199:k")).toMatchObject({ index: 1199, value: { answer: "réponse 1199" } })
    }))

  it.live("a file that is not a SQLite database fails with a CheckpointError naming the file, and is left as it was", () =>
    Effect.gen(function*() {
      const filename = join(dir, "random.db")
      const bytes = randomBytes(16_384)
      writeFileSync(filename, bytes)
      const cause = yield* setupFailure(SqliteClient.layer({ filename, disableWAL: true }))
      const error = Option.getOrThrow(Cause.failureOption(cause))
      expect(error).toBeInstanceOf(CheckpointStore.CheckpointError)
      expect(error).toMatchObject({ _tag: "CheckpointError", operation: "setup" })
      expect((error as CheckpointStore.CheckpointError).message).toBe(
        `the checkpoint store could not be set up: ${JSON.stringify(filename)} is not a SQLite database ` +
          "(SQLITE_NOTADB: file is not a database); point the store at another file, or move this one away"
      )
      expect(readFileSync(filename).equals(bytes)).toBe(true)
    }))

  it.live("with a client that sets WAL itself, such a file kills the client before the store runs (see the module's notes)", () =>
    Effect.gen(function*() {
      const filename = join(dir, "random-wal.db")
      writeFileSync(filename, randomBytes(16_384))
      const cause = yield* setupFailure(SqliteClient.layer({ filename }))
      expect(Cause.isFailType(cause)).toBe(false)
      expect(Cause.squash(cause)).toMatchObject({ code: "SQLITE_NOTADB" })
    }))

  it.live("a SQLite database with foreign tables of our names is refused and only read: same bytes, no -wal or -shm", () =>
    Effect.gen(function*() {
      const filename = join(dir, "foreign.db")
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* sql`CREATE TABLE effect_batch_runs (x INTEGER)`
        yield* sql`INSERT INTO effect_batch_runs VALUES (1)`
      }).pipe(Effect.provide(SqliteClient.layer({ filename, disableWAL: true })), Effect.scoped)
      const bytes = readFileSync(filename)
      const error = Option.getOrThrow(Cause.failureOption(yield* setupFailure(SqliteClient.layer({ filename, disableWAL: true }))))
      expect((error as CheckpointStore.CheckpointError).message).toContain("table effect_batch_runs lacks run_id")
      expect(readFileSync(filename).equals(bytes)).toBe(true)
      expect([existsSync(`${filename}-wal`), existsSync(`${filename}-shm`)]).toEqual([false, false])
    }))

  it.live("a table with another schema version is refused, even after the process restarts", () =>
    Effect.gen(function*() {
      const filename = join(dir, "version.db")
      const client = () => SqliteClient.layer({ filename })
      yield* Layer.build(SqlCheckpointStore.layer().pipe(Layer.provide(client()))).pipe(Effect.scoped)
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient
        yield* sql`UPDATE effect_batch_meta SET value = '7' WHERE key = 'checkpoint_schema_version'`
      }).pipe(Effect.provide(client()))
      const error = Option.getOrThrow(Cause.failureOption(yield* setupFailure(client())))
      expect(error).toMatchObject({ _tag: "CheckpointError", operation: "setup" })
      expect((error as CheckpointStore.CheckpointError).message).toContain("effect_batch_meta says schema version 7")
    }))
})
