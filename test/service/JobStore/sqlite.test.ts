import { SqlClient } from "@effect/sql"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { afterAll, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as SqlJobStore from "../../../src/service/SqlJobStore.js"
import { sqlConformance } from "./conformance.js"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-jobstore-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

let files = 0
/** A new database file per build. */
const client = Layer.suspend(() => SqliteClient.layer({ filename: join(dir, `jobs-${files++}.db`) }))

sqlConformance("SqlJobStore.layer (SQLite)", client)

it.effect("SqlJobStore on SQLite: WAL, and commits without an fsync each (synchronous = NORMAL)", () =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe("PRAGMA synchronous = FULL")
    yield* SqlJobStore.make
    expect(yield* sql.unsafe("PRAGMA journal_mode")).toEqual([{ journal_mode: "wal" }])
    // 1 is NORMAL (2, FULL, is the default).
    expect(yield* sql.unsafe("PRAGMA synchronous")).toEqual([{ synchronous: 1 }])
  }).pipe(Effect.provide(SqliteClient.layer({ filename: join(dir, "pragmas.db"), disableWAL: true }))))
