/**
 * kill -9 in the middle of a checkpointed run, then resume: a real child
 * process of the CLI against a simulator served by this test process.
 */
import type { HttpClient } from "@effect/platform"
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Layer } from "effect"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as CheckpointStore from "../../src/CheckpointStore.js"
import * as RunCommand from "../../src/cli/RunCommand.js"
import * as StopSignal from "../../src/cli/StopSignal.js"
import * as Simulator from "../../src/llm/Simulator.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import * as SqlCheckpointStore from "../../src/sql/SqlCheckpointStore.js"
import { runAgainst, runCli } from "../support/cliProcess.js"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-crash-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const items = 400
const input = join(dir, "prompts.jsonl")
writeFileSync(input, Array.from({ length: items }, (_, i) => JSON.stringify(`Crash test prompt ${i}`)).join("\n") + "\n")

const lineCount = (path: string) => (existsSync(path) ? readFileSync(path, "utf8").split("\n").filter((l) => l !== "").length : 0)

/** Starts the CLI in a child process and SIGKILLs it once its results file has `killAfter` lines. */
const runAndKill = (url: string, db: string, out: string, killAfter: number) =>
  runCli([
    ...runAgainst(url, input, out, "CRASH_KEY"),
    "--concurrency",
    "8",
    "--run-id",
    "crash",
    "--db",
    db,
    "--progress",
    "none"
  ], { CRASH_KEY: "k" }, () => lineCount(out) >= killAfter)

const recorded = (db: string) =>
  Effect.gen(function*() {
    const store = yield* CheckpointStore.CheckpointStore
    return yield* store.load("crash")
  }).pipe(
    Effect.provide(SqlCheckpointStore.layer().pipe(Layer.provide(SqliteClient.layer({ filename: db, disableWAL: true })))),
    Effect.orDie
  )

const withSimulator = <A, E>(f: (simulator: Simulator.Service) => Effect.Effect<A, E, NodeContext.NodeContext | HttpClient.HttpClient>) =>
  Effect.flatMap(Simulator.Simulator, f).pipe(
    Effect.provide(Layer.mergeAll(
      SimulatorServer.layer({ latency: { baseMs: 15, jitter: 0.3 }, failureRate: 0.05 }),
      NodeContext.layer,
      NodeHttpClient.layerUndici
    )),
    Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["CRASH_KEY", "k"]])))
  )

describe("crash and resume", () => {
  for (const killAfter of [30, 170, 330]) {
    it.live(`SIGKILL after ${killAfter} results, resume: every line once, nothing recorded is called again`, () =>
      withSimulator((simulator) =>
        Effect.gen(function*() {
          const db = join(dir, `crash-${killAfter}.db`)
          const { killed } = yield* runAndKill(simulator.url, db, join(dir, `first-${killAfter}.jsonl`), killAfter)
          expect(killed).toBe(true)
          const before = yield* simulator.metrics
          const atKill = yield* recorded(db)
          // The checkpoint trails the results file by a group (~25 ms): an early kill may find it empty.
          expect(atKill.size).toBeLessThanOrEqual(items)

          const out = join(dir, `resumed-${killAfter}.jsonl`)
          const resumed = yield* RunCommand.run({
            input,
            out,
            baseUrl: `${simulator.url}/v1`,
            apiKeyEnv: "CRASH_KEY",
            model: "sim-chat",
            concurrency: 8,
            runId: "crash",
            db,
            progress: "none"
          }).pipe(Effect.provide(StopSignal.layerManual))
          const after = yield* simulator.metrics

          // Every input line has exactly one result line, all succeeded.
          const lines = readFileSync(out, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as { index: number, status: string })
          expect(lines.length).toBe(items)
          expect(new Set(lines.map((l) => l.index)).size).toBe(items)
          expect(lines.every((l) => l.status === "succeeded")).toBe(true)
          // Items recorded at the kill come back from the checkpoint; only the others are called.
          expect(resumed.report.sources.checkpoint).toBe(atKill.size)
          const callsAfterResume = after.byStatus["200"]! - (before.byStatus["200"] ?? 0)
          expect(callsAfterResume).toBe(items - atKill.size)
          // Paid twice: items answered before the kill but not yet in the checkpoint: in flight (8), or in the
          // group gathering (25 ms, ~15 items at this pace) or being written.
          const paidTwice = (before.byStatus["200"] ?? 0) - atKill.size
          expect(paidTwice).toBeGreaterThanOrEqual(0)
          expect(paidTwice).toBeLessThanOrEqual(8 + 60)
        })))
  }
})
