/**
 * `run --mode batch|auto` in-process (`RunCommand.runInBatchMode`) against
 * the simulator it starts: the results file, the summary, the checks made
 * before anything is sent, and `batches status` over what the run recorded.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as BatchApi from "../../src/llm/BatchApi.js"
import * as BatchModeRun from "../../src/cli/BatchModeRun.js"
import * as BatchesCommand from "../../src/cli/BatchesCommand.js"
import * as RunCommand from "../../src/cli/RunCommand.js"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-batch-mode-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const input = join(dir, "prompts.jsonl")
writeFileSync(input, [...Array.from({ length: 120 }, (_, i) => JSON.stringify(i === 7 ? `INVALID ${i}` : `prompt ${i}`)), "{oops"].join("\n") + "\n")

const platform = Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)

const lines = (path: string) => readFileSync(path, "utf8").split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as Record<string, unknown>)

describe("run --mode batch", () => {
  it.live("writes one line per input line (source batch, the bad line naming file:line) and says what it saved", () =>
    Effect.gen(function*() {
      const out = join(dir, "out.jsonl")
      const db = join(dir, "runs.db")
      const outcome = yield* RunCommand.runInBatchMode({ input, out, simulate: true, mode: "batch", runId: "b1", db, shardSize: 50 })
      const written = lines(out)
      expect(written).toHaveLength(121)
      expect(new Set(written.map((l) => l["line"])).size).toBe(121)
      expect(written.filter((l) => l["status"] === "succeeded").every((l) => l["source"] === "batch" && (l["cost"] as number) > 0)).toBe(true)
      expect(written.find((l) => l["line"] === 121)).toMatchObject({ status: "failed", error: { message: expect.stringContaining("prompts.jsonl:121") } })
      expect(written.find((l) => l["line"] === 8)).toMatchObject({ status: "failed", error: { tag: "Permanent" } })
      expect(outcome.report).toMatchObject({ items: 120, succeeded: 119, failed: 1, batchesCreated: 3, shards: 3 })
      const summary = BatchModeRun.summary(outcome)
      expect(summary).toMatch(/batches {5}3 created, 0 re-attached, 3 shards, 1 round/)
      expect(summary).toMatch(/saved \$/)
      // What the run recorded: every shard ingested.
      const shards = yield* BatchApi.shards("b1").pipe(Effect.provide(RunCommand.checkpointLayer(db)))
      expect(shards.map((s) => [s.key, s.state, s.lines])).toEqual([["0/0", "ingested", 50], ["0/1", "ingested", 50], ["0/2", "ingested", 20]])
      expect(BatchesCommand.formatShards("b1", shards)).toContain("3 shards: 3 ingested")
    }).pipe(Effect.provide(platform)))

  it.live("flags that shape live calls, a deadline without --mode auto, and a bad deadline are refused before anything starts", () =>
    Effect.gen(function*() {
      const out = join(dir, "refused.jsonl")
      const refused = (options: Partial<RunCommand.RunOptions>) =>
        Effect.flip(RunCommand.runInBatchMode({ input, out, simulate: true, mode: "batch", ...options }))
      expect((yield* refused({ rpm: 10, concurrency: 4 })).message).toBe("--rpm, --concurrency shape live calls, and --mode batch makes none")
      expect((yield* refused({ deadline: "2h" })).message).toBe("--deadline goes with --mode auto")
      expect((yield* refused({ mode: "auto" })).message).toMatch(/^--mode auto needs --deadline/)
      expect((yield* refused({ mode: "auto", deadline: "soon" })).message).toMatch(/^--deadline must be a number > 0 followed by s, m or h/)
      expect((yield* refused({ mode: "auto", deadline: "1h", batchApi: "anthropic" })).message).toMatch(/not with --batch-api anthropic/)
      expect((yield* refused({ shardSize: 0 })).message).toMatch(/--shard-size must be an integer > 0/)
      expect(existsSync(out)).toBe(false)
    }).pipe(Effect.provide(platform)))

  it.live("--mode auto with a deadline already past: the batches are cancelled, every line still gets its one result, live", () =>
    Effect.gen(function*() {
      const out = join(dir, "auto.jsonl")
      const outcome = yield* RunCommand.runInBatchMode({ input, out, simulate: true, mode: "auto", deadline: "0.001s", shardSize: 60 })
      const written = lines(out)
      expect(written).toHaveLength(121)
      expect(new Set(written.map((l) => l["line"])).size).toBe(121)
      expect(outcome.report.live).toBe(120)
      expect(written.filter((l) => l["status"] === "succeeded").every((l) => l["source"] === "call")).toBe(true)
      expect(outcome.simulator!.batches.linesBilled).toBe(0)
    }).pipe(Effect.provide(platform)))
})
