import { PgClient } from "@effect/sql-pg"
import { afterAll } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { dropTable, sqlConformance } from "./conformance.js"

// CI sets DATABASE_URL=postgres://postgres@127.0.0.1:5432/test; without it the suite is reported as skipped.
const url = process.env.DATABASE_URL
const client = PgClient.layer({ url: Redacted.make(url ?? ""), maxConnections: 4 })
const table = `result_cache_test_${process.pid}_${Date.now()}`

sqlConformance("SqlResultCache.layer (PostgreSQL)", client, { table, skip: url === undefined })

afterAll(async () => {
  if (url !== undefined) await Effect.runPromise(dropTable(table).pipe(Effect.provide(client)))
})
