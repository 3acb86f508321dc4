import { SqliteClient } from "@effect/sql-sqlite-node"
import { afterAll } from "@effect/vitest"
import { Layer } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { sqlConformance } from "./conformance.js"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-jobstore-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

let files = 0
/** A new database file per build. */
const client = Layer.suspend(() => SqliteClient.layer({ filename: join(dir, `jobs-${files++}.db`) }))

sqlConformance("SqlJobStore.layer (SQLite)", client)
