import { SqlClient } from "@effect/sql"
import { PgClient } from "@effect/sql-pg"
import { afterAll } from "@effect/vitest"
import { Effect, Layer, Redacted } from "effect"
import { sqlConformance } from "./conformance.js"

// CI sets DATABASE_URL=postgres://postgres@127.0.0.1:5432/test; without it the suite is reported as skipped.
const url = process.env.DATABASE_URL
const databases: Array<string> = []
const admin = () => PgClient.layer({ url: Redacted.make(url!), maxConnections: 1 })
const adminSql = (statement: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.unsafe(statement)).pipe(Effect.provide(admin()), Effect.orDie)

/** A database made for each build (the store's table names are fixed), dropped after the file's tests. */
const client = Layer.unwrapEffect(Effect.gen(function*() {
  const database = `effect_batch_jobstore_${process.pid}_${Date.now()}_${databases.length}`
  databases.push(database)
  yield* adminSql(`CREATE DATABASE ${database}`)
  const parsed = new URL(url!)
  parsed.pathname = `/${database}`
  return PgClient.layer({ url: Redacted.make(parsed.toString()), maxConnections: 4 })
}))
afterAll(async () => {
  for (const database of databases) await Effect.runPromise(adminSql(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`))
})

sqlConformance("SqlJobStore.layer (PostgreSQL)", client, { skip: url === undefined })
