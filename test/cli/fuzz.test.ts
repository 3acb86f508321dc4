/**
 * Random input lines at the CLI: every line comes out as one result (a bad
 * line as a failure naming `file:line`), nothing prints a stack trace, and a
 * run refused under an existing run id loses nothing already recorded.
 */
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck, Layer } from "effect"
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as CheckpointStore from "../../src/CheckpointStore.js"
import * as JsonlInput from "../../src/llm/JsonlInput.js"
import type * as Simulator from "../../src/llm/Simulator.js"
import * as SqlCheckpointStore from "../../src/sql/SqlCheckpointStore.js"
import { against, cli, withSimulator } from "./CliHarness.js"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-fuzz-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** Lines a user's file may hold: prompts, requests (valid or nearly), JSON of every kind, and junk. */
const lineArbitrary: FastCheck.Arbitrary<string> = FastCheck.oneof(
  FastCheck.string({ minLength: 1, maxLength: 40 }).map((text) => JSON.stringify(text)),
  FastCheck.record({
    id: FastCheck.oneof(FastCheck.string(), FastCheck.integer(), FastCheck.constant(null), FastCheck.double()),
    messages: FastCheck.oneof(
      FastCheck.array(FastCheck.record({ role: FastCheck.constantFrom("user", "system", "tool", ""), content: FastCheck.string() }), {
        maxLength: 3
      }),
      FastCheck.jsonValue()
    ),
    max_tokens: FastCheck.oneof(FastCheck.integer({ min: -5, max: 500 }), FastCheck.double(), FastCheck.string())
  }, { requiredKeys: [] }).map((value) => JSON.stringify(value)),
  FastCheck.jsonValue({ maxDepth: 4 }).map((value) => JSON.stringify(value)),
  FastCheck.string({ maxLength: 60 }),
  FastCheck.string({ unit: "binary", maxLength: 60 }),
  FastCheck.constantFrom("{", "[", "\"unterminated", "\uFEFF\"bom\"", "null", "{\"messages\": []}", "\"\"", "  ")
).map((line) => line.replace(/[\r\n]/g, " "))

describe("JsonlInput.parse on random lines", () => {
  it.prop("never throws; a line it cannot send names file:line and says why", { line: lineArbitrary }, ({ line }) => {
    const item = JsonlInput.parse("in.jsonl", { number: 7, text: line }, 3)
    expect(item.index).toBe(3)
    expect(item.line).toBe(7)
    if (item._tag === "Rejected") expect(item.message).toMatch(/^in\.jsonl:7: \S/)
  }, { fastCheck: { numRuns: 2_000 } })
})

const runArgs = (simulator: Simulator.Service, input: string, out: string) => [...against(simulator, input, out), "--max-attempts", "1"]

const recorded = (db: string) =>
  Effect.flatMap(CheckpointStore.CheckpointStore, (store) => store.load("fuzz")).pipe(
    Effect.map((outcomes) => [...outcomes.values()].map((o) => [o.itemKey, o.status]).sort()),
    Effect.provide(SqlCheckpointStore.layer().pipe(Layer.provide(SqliteClient.layer({ filename: db, disableWAL: true })))),
    Effect.orDie
  )

const files = FastCheck.sample(FastCheck.array(lineArbitrary, { minLength: 1, maxLength: 25 }), { numRuns: 15, seed: 20261130 })

/** Lines that hold something (blank ones are skipped but counted). */
const nonBlank = (lines: ReadonlyArray<string>) => lines.filter((line) => line.replace(/^\uFEFF/, "").trim() !== "").length

describe("effect-batch run on random files", () => {
  it.live("one result per non-blank line, bad lines name file:line, never a stack trace; exit 0 or 1", () =>
    withSimulator((simulator) =>
      Effect.gen(function*() {
        for (const [n, lines] of files.entries()) {
          const input = join(dir, `random-${n}.jsonl`)
          const out = join(dir, `random-${n}.out.jsonl`)
          writeFileSync(input, lines.join("\n"))
          const { code, err, out: stdout } = yield* cli(runArgs(simulator, input, out))
          const expected = nonBlank(lines)
          if (expected === 0) {
            expect(code).toBe(0)
          } else {
            expect([0, 1]).toContain(code)
          }
          expect(`${stdout}\n${err}`).not.toMatch(/\n\s+at \S+ \(|effect-batch: failed/)
          const results = readFileSync(out, "utf8").split("\n").filter((l) => l !== "")
            .map((l) => JSON.parse(l) as { index: number, line: number, status: string, attempts: number, error?: { message: string } })
          expect(results.length).toBe(expected)
          expect(new Set(results.map((r) => r.index)).size).toBe(expected)
          for (const result of results) {
            if (result.status === "failed" && result.attempts === 0) {
              expect(result.error?.message.startsWith(`${input}:${result.line}: `)).toBe(true)
            }
          }
        }
      }).pipe(Effect.provide(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)))))

  it.live("a checkpointed run given random files under its id: refused (exit 2), its results file and checkpoint untouched", () =>
    withSimulator((simulator) =>
      Effect.gen(function*() {
        const db = join(dir, "fuzz.db")
        const input = join(dir, "good.jsonl")
        const out = join(dir, "good.out.jsonl")
        writeFileSync(input, Array.from({ length: 20 }, (_, i) => JSON.stringify(`Prompt ${i}`)).join("\n"))
        expect((yield* cli([...runArgs(simulator, input, out), "--run-id", "fuzz", "--db", db])).code).toBe(0)
        const results = readFileSync(out)
        const checkpoint = yield* recorded(db)
        expect(checkpoint.length).toBe(20)
        for (const [n, lines] of files.entries()) {
          const other = join(dir, `other-${n}.jsonl`)
          writeFileSync(other, lines.join("\n"))
          const { code, err } = yield* cli([...runArgs(simulator, other, out), "--run-id", "fuzz", "--db", db])
          expect(code).toBe(2)
          expect(err).toMatch(
            /^effect-batch: run "fuzz" in .* (is not the line it recorded|ends at line \d+, and the run recorded \d+ items past it)/
          )
          expect(readFileSync(out).equals(results)).toBe(true)
          expect(yield* recorded(db)).toEqual(checkpoint)
        }
      }).pipe(Effect.provide(Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)))))
})
