import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Stream } from "effect"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as JsonlInput from "../../src/llm/JsonlInput.js"

const encoder = new TextEncoder()

/** The lines of `text` delivered as byte chunks cut at `cuts` (byte offsets). */
const linesOf = (bytes: Uint8Array, cuts: ReadonlyArray<number>) => {
  const bounds = [0, ...cuts, bytes.length]
  const chunks = bounds.slice(1).map((end, i) => bytes.slice(bounds[i], end))
  return Stream.fromIterable(chunks).pipe(JsonlInput.lines, Stream.runCollect, Effect.map(Chunk.toArray), Effect.runSync)
}

/** Every way to cut `bytes` into two chunks, and into single bytes. */
const everySplit = (bytes: Uint8Array): ReadonlyArray<ReadonlyArray<number>> => [
  [],
  ...Array.from({ length: bytes.length - 1 }, (_, i) => [i + 1]),
  Array.from({ length: bytes.length - 1 }, (_, i) => i + 1)
]

describe("JsonlInput.lines", () => {
  it("numbers lines like an editor, skipping blank ones, whatever the chunking", () => {
    const bytes = encoder.encode("\"a\"\n\n  \n{\"b\":1}\r\n\r\n\"c\"")
    for (const cuts of everySplit(bytes)) {
      expect(linesOf(bytes, cuts), `cut at ${cuts.join(",")}`).toEqual([
        { number: 1, text: "\"a\"" },
        { number: 4, text: "{\"b\":1}" },
        { number: 6, text: "\"c\"" }
      ])
    }
  })

  it("keeps multi-byte UTF-8 characters whole when a chunk boundary cuts them", () => {
    const text = "\"héllo €uro 🎉\"\n\"日本語\""
    const bytes = encoder.encode(text)
    for (const cuts of everySplit(bytes)) {
      expect(linesOf(bytes, cuts).map((line) => line.text), `cut at ${cuts.join(",")}`).toEqual(["\"héllo €uro 🎉\"", "\"日本語\""])
    }
  })

  it("reads a final line without a newline, and no phantom line after a final newline", () => {
    expect(linesOf(encoder.encode("\"a\"\n\"b\""), [])).toEqual([{ number: 1, text: "\"a\"" }, { number: 2, text: "\"b\"" }])
    expect(linesOf(encoder.encode("\"a\"\n\"b\"\n"), [])).toEqual([{ number: 1, text: "\"a\"" }, { number: 2, text: "\"b\"" }])
    expect(linesOf(encoder.encode(""), [])).toEqual([])
  })

  it("drops a UTF-8 byte order mark on the first line only", () => {
    expect(linesOf(encoder.encode("\uFEFF\"a\"\n\"\uFEFFb\""), [1, 2])).toEqual([
      { number: 1, text: "\"a\"" },
      { number: 2, text: "\"\uFEFFb\"" }
    ])
  })
})

describe("JsonlInput.parse", () => {
  const parse = (text: string, number = 17, index = 3) => JsonlInput.parse("prompts.jsonl", { number, text }, index)

  it("reads a JSON string as a prompt", () => {
    expect(parse("\"Summarize this\"")).toEqual({ _tag: "Entry", index: 3, line: 17, id: undefined, input: "Summarize this" })
  })

  it("reads a request object, keeping its id out of what is sent", () => {
    const request = { id: "req-1", messages: [{ role: "user", content: "Hi" }], max_tokens: 32, temperature: 0 }
    expect(parse(JSON.stringify(request))).toEqual({
      _tag: "Entry",
      index: 3,
      line: 17,
      id: "req-1",
      input: { messages: [{ role: "user", content: "Hi" }], max_tokens: 32, temperature: 0 }
    })
    expect(parse(JSON.stringify({ ...request, id: 42 }))).toMatchObject({ _tag: "Entry", id: 42 })
  })

  it.each([
    ["{\"messages\": [", "prompts.jsonl:17: invalid JSON: "],
    ["{\"messages\": [{\"role\": \"user\"}]}", "prompts.jsonl:17: messages[0].content is missing"],
    ["{\"id\": \"x\"}", "prompts.jsonl:17: messages is missing"],
    ["{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", "prompts.jsonl:17: messages[0].content: expected string, actual 5"],
    ["{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"max_tokens\": 1.5}", "prompts.jsonl:17: max_tokens: expected an integer"],
    ["{\"id\": [1], \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "prompts.jsonl:17: id must be a string or a number, got an array"],
    ["[\"a\", \"b\"]", "prompts.jsonl:17: expected a prompt (a JSON string) or a chat request (a JSON object), got an array"],
    ["42", "prompts.jsonl:17: expected a prompt (a JSON string) or a chat request (a JSON object), got a number"],
    ["null", "prompts.jsonl:17: expected a prompt (a JSON string) or a chat request (a JSON object), got null"],
    ["\"   \"", "prompts.jsonl:17: the prompt is an empty string"]
  ])("rejects %s with a message naming file and line", (text, message) => {
    const item = parse(text)
    expect(item._tag).toBe("Rejected")
    expect(item._tag === "Rejected" && item.message.startsWith(message), item._tag === "Rejected" ? item.message : "").toBe(true)
    expect(item).toMatchObject({ index: 3, line: 17 })
  })

  it("rejects a line nested deeper than JsonDepth.limit, before anything walks it", () => {
    const deep = (n: number) => "[".repeat(n) + "\"x\"" + "]".repeat(n)
    const request = (n: number) => `{"messages":[{"role":"user","content":"x"}],"response_format":${deep(n)}}`
    for (const text of [deep(5000), request(5000), `{"messages":${deep(5000)}}`, `{"id":${deep(5000)},"messages":[]}`]) {
      expect(parse(text)).toMatchObject({ _tag: "Rejected", message: "prompts.jsonl:17: nests arrays and objects more than 64 levels deep" })
    }
    // The request object is one of the 64 levels.
    expect(parse(request(63))).toMatchObject({ _tag: "Entry" })
    expect(parse(request(64))).toMatchObject({ _tag: "Rejected" })
  })

  it("keeps the id of a request that fails the schema", () => {
    expect(parse("{\"id\": \"req-9\", \"messages\": []}")).toMatchObject({ _tag: "Rejected", id: "req-9" })
  })
})

describe("JsonlInput.read and count", () => {
  const dir = mkdtempSync(join(tmpdir(), "effect-batch-jsonl-"))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it.effect("stream a file: items indexed among non-blank lines, line numbers true; count agrees", () =>
    Effect.gen(function*() {
      const path = join(dir, "in.jsonl")
      writeFileSync(path, "\"one\"\r\n\r\n{bad\n\n{\"id\":7,\"messages\":[{\"role\":\"user\",\"content\":\"two\"}]}")
      const items = yield* JsonlInput.read(path).pipe(Stream.runCollect, Effect.map(Chunk.toArray))
      expect(items.map((item) => [item._tag, item.index, item.line])).toEqual([
        ["Entry", 0, 1],
        ["Rejected", 1, 3],
        ["Entry", 2, 5]
      ])
      expect(items[1]).toMatchObject({ message: expect.stringMatching(new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:3: invalid JSON`)) })
      expect(yield* JsonlInput.count(path)).toBe(3)
    }).pipe(Effect.provide(NodeContext.layer)))

  it.effect("reads a file larger than one chunk without losing or splitting lines", () =>
    Effect.gen(function*() {
      const path = join(dir, "big.jsonl")
      const lines = Array.from({ length: 5_000 }, (_, i) => JSON.stringify(`prompt ${i} ${"é".repeat(i % 37)}`))
      writeFileSync(path, lines.join("\n"))
      const items = yield* JsonlInput.read(path).pipe(Stream.runCollect, Effect.map(Chunk.toArray))
      expect(items.length).toBe(5_000)
      expect(items.every((item, i) => item._tag === "Entry" && item.input === JSON.parse(lines[i]!) && item.line === i + 1)).toBe(true)
    }).pipe(Effect.provide(NodeContext.layer)))
})
