/**
 * kill -9 of `run --mode batch` at each step of a shard's life, then the
 * same command again: a real child process of the CLI against a simulator
 * served by this test process (which watches its counters to pick the
 * moment). The run again must create no second batch for any shard and
 * write every line exactly once.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as Simulator from "../../src/llm/Simulator.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import { runAgainst, runCli as cli } from "../support/cliProcess.js"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-batch-crash-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const items = 600
const shardSize = 200
const input = join(dir, "prompts.jsonl")
writeFileSync(input, Array.from({ length: items }, (_, i) => JSON.stringify(`Batch crash prompt ${i}`)).join("\n") + "\n")

const resultLines = (path: string) =>
  existsSync(path) ? readFileSync(path, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as { index: number, status: string }) : []

/** `run --mode batch` with the test's flags. */
const runArgs = (url: string, db: string, out: string) => [
  ...runAgainst(url, input, out, "BATCH_CRASH_KEY"),
  "--mode",
  "batch",
  "--run-id",
  "batch-crash",
  "--db",
  db,
  "--shard-size",
  String(shardSize),
  "--poll",
  "0.2"
]

/** The CLI with `args`, its key in the environment; SIGKILLed once `killWhen` holds, if given. */
const runCli = (args: ReadonlyArray<string>, killWhen?: () => boolean) => cli(args, { BATCH_CRASH_KEY: "k" }, killWhen)

const withSimulator = <A, E>(f: (simulator: Simulator.Service) => Effect.Effect<A, E>, linesPerSecond = 400) =>
  Effect.flatMap(Simulator.Simulator, f).pipe(
    Effect.provide(Layer.mergeAll(
      SimulatorServer.layer({
        latency: { baseMs: 0 },
        batches: { validateMs: 400, linesPerSecond, finalizeMs: 200, fileProcessingMs: 100 }
      }),
      NodeContext.layer,
      NodeHttpClient.layerUndici
    ))
  )

const moments: ReadonlyArray<readonly [string, (m: Simulator.BatchMetrics, out: string) => boolean]> = [
  ["right after the first upload (its shard planned or uploaded)", (m) => m.uploads >= 1],
  ["right after the first batch was created (its id perhaps not yet recorded)", (m) => m.created >= 1],
  ["once every shard's batch was created (running at the provider)", (m) => m.created >= items / shardSize],
  ["while results are being ingested", (_, out) => resultLines(out).length >= 1]
]

describe("run --mode batch: kill -9 at each step of a shard's life, then run again", () => {
  moments.forEach(([moment, killWhen], n) => {
    it.live(`SIGKILL ${moment}, then ${n % 2 === 0 ? "the same command" : "batches attach"}: no second batch for any shard, every line once`, () =>
      withSimulator((simulator) =>
        Effect.gen(function*() {
          const db = join(dir, `crash-${n}.db`)
          const first = join(dir, `first-${n}.jsonl`)
          const metrics = () => Effect.runSync(simulator.metrics).batches
          const { killed } = yield* runCli(runArgs(simulator.url, db, first), () => killWhen(metrics(), first))
          expect(killed).toBe(true)
          const atKill = metrics()
          expect(resultLines(first).length).toBeLessThan(items)

          const out = join(dir, `again-${n}.jsonl`)
          // Once by the same command again, once by `batches attach`, which runs it as it was kept.
          const again = yield* runCli(n % 2 === 0 ? runArgs(simulator.url, db, out) : ["batches", "attach", "batch-crash", "--db", db, "--out", out])
          expect(again.code).toBe(0)
          const lines = resultLines(out)
          expect(lines.length).toBe(items)
          expect(new Set(lines.map((l) => l.index)).size).toBe(items)
          expect(lines.every((l) => l.status === "succeeded")).toBe(true)
          const after = metrics()
          // One batch per shard, whichever process created it; each line billed once.
          expect(after.created).toBe(items / shardSize)
          expect(after.billedTwice).toEqual({})
          expect(after.linesBilled).toBe(items)
          expect(after.created).toBeGreaterThanOrEqual(atKill.created)
        })), 60_000)
  })
})

describe("batches cancel", () => {
  it.live("an Anthropic run killed with its batches out: cancelled through Message Batches, run again, what ran kept, the rest skipped", () =>
    withSimulator((simulator) =>
      Effect.gen(function*() {
        const db = join(dir, "cancel.db")
        const args = (out: string) => [...runArgs(simulator.url, db, out), "--batch-api", "anthropic"]
        const metrics = () => Effect.runSync(simulator.metrics).batches
        const { killed } = yield* runCli(args(join(dir, "cancel-first.jsonl")), () => metrics().created >= items / shardSize)
        expect(killed).toBe(true)
        const cancel = yield* runCli(["batches", "cancel", "batch-crash", "--db", db, "--base-url", `${simulator.url}/v1`, "--api-key-env", "BATCH_CRASH_KEY"])
        expect(cancel.code).toBe(0)
        const out = join(dir, "cancel-again.jsonl")
        const again = yield* runCli(args(out))
        // Skipped lines: exit 1.
        expect(again.code).toBe(1)
        const lines = resultLines(out)
        expect(new Set(lines.map((l) => l.index)).size).toBe(items)
        const skipped = lines.filter((l) => l.status === "skipped").length
        expect(skipped).toBeGreaterThan(0)
        expect(lines.filter((l) => l.status === "succeeded").length + skipped).toBe(items)
        expect(metrics().created).toBe(items / shardSize)
      }), 20), 60_000)
})
