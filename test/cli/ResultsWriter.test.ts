import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as ResultsWriter from "../../src/cli/ResultsWriter.js"
import type * as OpenAiCompat from "../../src/llm/OpenAiCompat.js"
import * as TaskError from "../../src/TaskError.js"
import * as TaskResult from "../../src/TaskResult.js"

const completion: OpenAiCompat.ChatCompletion = {
  id: "c1",
  model: "sim-chat",
  content: "Bonjour",
  finishReason: "stop",
  usage: { promptTokens: 12, cachedPromptTokens: 0, completionTokens: 3, totalTokens: 15 },
  cost: 0.0000036
}

describe("ResultsWriter.recordOf", () => {
  it("a success: output, attempts, tokens, cost and source; the id only when the input had one", () => {
    expect(ResultsWriter.recordOf({ index: 4, line: 6, id: "req-6" }, TaskResult.succeeded(0, completion, 2, 120))).toEqual({
      index: 4,
      line: 6,
      id: "req-6",
      status: "succeeded",
      output: "Bonjour",
      attempts: 2,
      tokens: { prompt: 12, completion: 3 },
      cost: 0.0000036,
      source: "call"
    })
    const cached = ResultsWriter.recordOf({ index: 4, line: 6, id: undefined }, TaskResult.succeeded(9, completion, 0, 1, "cache"))
    expect(cached).toMatchObject({ status: "succeeded", cost: 0, source: "cache", attempts: 0 })
    expect("id" in cached).toBe(false)
  })

  it("a failure: its class, message, and the provider's status and code", () => {
    const error = new TaskError.Permanent({ message: "HTTP 400: flagged", status: 400, code: "invalid_prompt" })
    expect(ResultsWriter.recordOf({ index: 0, line: 1, id: 7 }, TaskResult.failed(0, error, "Permanent", 1, 3))).toEqual({
      index: 0,
      line: 1,
      id: 7,
      status: "failed",
      error: { tag: "Permanent", message: "HTTP 400: flagged", status: 400, code: "invalid_prompt" },
      attempts: 1,
      cost: 0
    })
  })

  it("a skipped item: its reason", () => {
    expect(ResultsWriter.recordOf({ index: 2, line: 3, id: undefined }, TaskResult.skipped(2, "budget"))).toEqual({
      index: 2,
      line: 3,
      status: "skipped",
      reason: "budget",
      attempts: 0,
      cost: 0
    })
  })
})

describe("ResultsWriter.open", () => {
  const dir = mkdtempSync(join(tmpdir(), "effect-batch-writer-"))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))
  const record = (index: number): ResultsWriter.OutputRecord => ({ index, line: index + 1, status: "skipped", reason: "budget", attempts: 0, cost: 0 })

  it.scoped("truncates the file and hands every write to the OS at once (readable before the writer closes)", () =>
    Effect.gen(function*() {
      const path = join(dir, "out.jsonl")
      writeFileSync(path, "old content\n")
      const writer = yield* ResultsWriter.open(path)
      expect(readFileSync(path, "utf8")).toBe("")
      yield* writer.write([record(0), record(1)])
      yield* writer.write([])
      yield* Effect.all([writer.write([record(2)]), writer.write([record(3)])], { concurrency: "unbounded" })
      const lines = readFileSync(path, "utf8").split("\n")
      expect(lines.at(-1)).toBe("")
      expect(lines.slice(0, -1).map((line) => JSON.parse(line).index).sort()).toEqual([0, 1, 2, 3])
      expect(yield* writer.written).toBe(4)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("fails with a UsageError naming the path when it cannot write, or when it is the input", () =>
    Effect.gen(function*() {
      const missing = join(dir, "no-such-dir", "out.jsonl")
      const directory = join(dir, "a-directory")
      mkdirSync(directory)
      const input = join(dir, "in.jsonl")
      writeFileSync(input, "\"keep me\"\n")
      const errors = yield* Effect.all([
        Effect.either(ResultsWriter.open(missing)),
        Effect.either(ResultsWriter.open(directory)),
        Effect.either(ResultsWriter.open(join(dir, ".", "in.jsonl"), { input }))
      ])
      const messages = errors.map((e) => (Either.isLeft(e) && e.left._tag === "UsageError" ? e.left.message : "no error"))
      expect(messages[0]).toBe(`cannot write the results to ${missing}: its directory does not exist`)
      expect(messages[1]).toMatch(new RegExp(`^cannot write the results to ${directory}: `))
      expect(messages[2]).toContain("is the input file")
      expect(readFileSync(input, "utf8")).toBe("\"keep me\"\n")
    }).pipe(Effect.provide(NodeContext.layer)))
})
