import { PgClient } from "@effect/sql-pg"
import { afterAll } from "@effect/vitest"
import { Effect, Redacted } from "effect"
import { dropTables, extraPrefixes, sqlConformance } from "./conformance.js"

// CI sets DATABASE_URL=postgres://postgres@127.0.0.1:5432/test; without it the suite is reported as skipped.
const url = process.env.DATABASE_URL
const client = PgClient.layer({ url: Redacted.make(url ?? ""), maxConnections: 4 })
const prefix = `checkpoint_test_${process.pid}_${Date.now()}_`

sqlConformance("SqlCheckpointStore.layer (PostgreSQL)", client, { prefix, skip: url === undefined })

afterAll(async () => {
  if (url === undefined) return
  await Effect.runPromise(Effect.forEach([prefix, ...extraPrefixes(prefix)], dropTables).pipe(Effect.provide(client)))
})
