/**
 * Random input against the real server on loopback: random JSON bodies at
 * `POST /jobs` (near-miss keys, wrong types, deep nesting), random query
 * strings at `GET /jobs` and `GET /jobs/:id/results`, random JSONL files
 * submitted as `file`. Never a 5xx or a stack trace: a 2xx, or a JSON error
 * with a `_tag` and a `message`; a file's bad lines are failed items naming
 * `file:line`; and the jobs submitted before are left as they were.
 */
import { HttpClient, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, FastCheck as fc, Layer } from "effect"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import * as Job from "../../src/service/Job.js"
import { client, InputDir, keyA, layer as serviceLayer, waitFor } from "../support/JobServiceTest.js"

const send = (request: HttpClientRequest.HttpClientRequest) =>
  Effect.flatMap(HttpClient.HttpClient, (http) => http.execute(request.pipe(HttpClientRequest.bearerToken(keyA))))

/** A 2xx, or a JSON error with a `_tag` and a `message`; never a 5xx or a stack trace. The body as text. */
const answer = (response: HttpClientResponse.HttpClientResponse, what: string) =>
  Effect.gen(function*() {
    const text = yield* response.text
    const context = `${what} → ${response.status} ${text.slice(0, 500)}`
    expect(response.status, context).toBeLessThan(500)
    expect(text, context).not.toMatch(/\n\s+at /)
    if (response.status < 300) return text
    expect(response.headers["content-type"], context).toContain("application/json")
    const error = JSON.parse(text) as Record<string, unknown>
    expect(typeof error._tag, context).toBe("string")
    expect(typeof error.message === "string" && error.message.length > 0, context).toBe(true)
    return text
  })

// ---------------------------------------------------------------------------
// the jobs there before
// ---------------------------------------------------------------------------

/** What must not change: the job as shown (all but the provider's live limit and rate), its results, its dead letters. */
const snapshot = (ids: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const api = yield* client(keyA)
    return yield* Effect.forEach(ids, (id) =>
      Effect.gen(function*() {
        const { concurrencyLimit: _limit, rate: _rate, ...job } = yield* api.jobs.get({ path: { id } })
        const results = yield* Effect.flatMap(send(HttpClientRequest.get(`/jobs/${id}/results`)), (r) => r.text)
        const deadLetters = yield* api.jobs.deadLetters({ path: { id } })
        return { job, results, deadLetters }
      }))
  }).pipe(Effect.orDie)

class Before extends Context.Tag("test/Before")<Before, {
  readonly ids: ReadonlyArray<string>
  readonly snapshot: Effect.Effect.Success<ReturnType<typeof snapshot>>
}>() {}

const setup = {
  files: {
    "good.jsonl": "\"first prompt\"\n{\"messages\":[{\"role\":\"user\",\"content\":\"second\"}],\"max_tokens\":20}\n",
    "mixed.jsonl": "\"fine\"\n{not json\n\n{\"messages\":[]}\n\"INVALID prompt\"\n"
  }
}

/** Three finished jobs (one with dead letters, one from a file with a rejected line, one with a key). */
const before = Layer.effect(
  Before,
  Effect.gen(function*() {
    const api = yield* client(keyA)
    const submitted = [
      yield* api.jobs.submit({
        payload: { items: ["before one", "INVALID before two", "before three"], metadata: { run: "before" } },
        headers: { "idempotency-key": "before-1" }
      }),
      yield* api.jobs.submit({ payload: { file: "mixed.jsonl", priority: 3 }, headers: {} }),
      yield* api.jobs.submit({ payload: { items: ["before four"], profile: "second" }, headers: { "idempotency-key": "before-2" } })
    ]
    const ids = submitted.map((s) => s.id)
    for (const id of ids) yield* waitFor(api.jobs.get({ path: { id } }), (j) => Job.isTerminal(j.state))
    return { ids, snapshot: yield* snapshot(ids) }
  }).pipe(Effect.orDie)
).pipe(Layer.provideMerge(serviceLayer(setup)))

// ---------------------------------------------------------------------------
// random bodies
// ---------------------------------------------------------------------------

/** Arrays or objects `depth` deep, built without recursion. */
const nested = (depth: number, kind: "array" | "object"): unknown => {
  let value: unknown = "bottom"
  for (let i = 0; i < depth; i++) value = kind === "array" ? [value] : { deeper: value }
  return value
}

const json = fc.jsonValue({ maxDepth: 3 })
const deep = fc.tuple(fc.integer({ min: 1, max: 4000 }), fc.constantFrom("array" as const, "object" as const))
  .map(([depth, kind]) => nested(depth, kind))
const anyValue = fc.oneof({ weight: 8, arbitrary: json }, { weight: 1, arbitrary: deep })

const message = fc.record(
  { role: fc.oneof(fc.constantFrom("user", "system", "assistant"), fc.string()), content: fc.oneof(fc.string(), anyValue) },
  { requiredKeys: [] }
).chain((m) => fc.dictionary(fc.constantFrom("name", "tool_call_id", "extra"), anyValue, { maxKeys: 2 }).map((extra) => ({ ...m, ...extra })))
const chatRequest = fc.record({
  messages: fc.oneof(fc.array(message, { maxLength: 3 }), anyValue),
  extra: fc.dictionary(fc.constantFrom("temperature", "response_format", "max_tokens", "model", "id", "seed"), anyValue, { maxKeys: 3 })
}, { requiredKeys: [] }).map(({ extra, ...request }) => ({ ...request, ...extra }))
const item = fc.oneof(fc.string(), fc.fullUnicodeString(), chatRequest, anyValue)

const valuesOf: Record<string, fc.Arbitrary<unknown>> = {
  items: fc.oneof({ weight: 4, arbitrary: fc.array(item, { maxLength: 4 }) }, { weight: 1, arbitrary: anyValue }),
  file: fc.oneof(fc.constantFrom("good.jsonl", "mixed.jsonl", "missing.jsonl", "../good.jsonl", "/etc/passwd", "."), fc.string()),
  profile: fc.oneof(fc.constantFrom("sim", "second", "nope"), anyValue),
  model: fc.oneof(fc.constantFrom("sim-chat", "sim-other", "gpt-9"), anyValue),
  priority: fc.oneof(fc.integer({ min: -12, max: 12 }), anyValue),
  maxCost: fc.oneof(fc.double(), anyValue),
  maxAttempts: fc.oneof(fc.integer({ min: -1, max: 25 }), anyValue),
  timeLimit: fc.oneof(fc.dictionary(fc.constantFrom("soft", "hard", "hadr", "Soft"), fc.oneof(fc.double({ min: 0, max: 2 }), anyValue)), anyValue),
  itemTimeout: fc.oneof(fc.double({ min: -1, max: 10 }), anyValue),
  itemDeadline: fc.oneof(fc.double({ min: -1, max: 10 }), anyValue),
  metadata: fc.oneof(fc.dictionary(fc.string(), fc.string()), fc.dictionary(fc.string(), anyValue), anyValue)
}
const nearMisses = ["maxcost", "Items", "item", "files", "timelimit", "max_cost", "priority ", "__proto__", "constructor", "toString", ""]
const field = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(...Object.keys(valuesOf)) },
  { weight: 2, arbitrary: fc.constantFrom(...nearMisses) },
  { weight: 1, arbitrary: fc.string() }
)
const submission = fc.uniqueArray(field, { maxLength: 6 })
  .chain((keys) =>
    fc.tuple(...keys.map((key) => (Object.hasOwn(valuesOf, key) ? valuesOf[key]! : anyValue).map((value) => [key, value] as const)))
  )
  .map((entries) => {
    const body: Record<string, unknown> = {}
    // defineProperty: a "__proto__" key is a field of the body, as JSON.parse would make it.
    for (const [key, value] of entries) Object.defineProperty(body, key, { value, enumerable: true, writable: true, configurable: true })
    return body
  })
/** A valid submission, at times with one near-miss field added. */
const plausible = fc.record({
  items: fc.array(fc.string({ minLength: 1 }).filter((p) => !p.includes("INVALID")), { minLength: 1, maxLength: 3 }),
  priority: fc.integer({ min: -10, max: 10 }),
  profile: fc.constantFrom("sim", "second"),
  metadata: fc.dictionary(fc.string(), fc.string(), { maxKeys: 2 }),
  timeLimit: fc.record({ soft: fc.constantFrom(5, 10), hard: fc.constantFrom(20, 30) }, { requiredKeys: [] })
}, { requiredKeys: ["items"] }).chain((valid) =>
  fc.oneof(
    { weight: 2, arbitrary: fc.constant(undefined) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...nearMisses), json) }
  ).map((extra) => extra === undefined ? valid : { ...valid, ...Object.fromEntries([extra]) })
)
const body = fc.oneof(
  { weight: 3, arbitrary: plausible.map((b) => JSON.stringify(b)) },
  { weight: 8, arbitrary: submission.map((b) => JSON.stringify(b)) },
  { weight: 1, arbitrary: anyValue.map((v) => JSON.stringify(v)) },
  { weight: 1, arbitrary: fc.string() }
)
const idempotencyKey = fc.option(
  fc.oneof(fc.constantFrom("before-1", "before-2", "random-1", "random-2", "k".repeat(250)), fc.stringMatching(/^[A-Za-z0-9-]{1,30}$/)),
  { nil: undefined }
)

// ---------------------------------------------------------------------------
// random queries
// ---------------------------------------------------------------------------

const queryKey = fc.oneof(
  fc.constantFrom("state", "limit", "cursor", "follow", "stat", "folow", "Limit", "", "__proto__"),
  fc.string()
)
const queryValue = fc.oneof(
  fc.constantFrom("running", "finished", "done", "1", "0", "200", "500", "-1", "1.5", "abc", "true", "false", "garbage", ""),
  fc.fullUnicodeString()
)
const query = fc.oneof(
  { weight: 4, arbitrary: fc.array(fc.tuple(queryKey, queryValue), { maxLength: 4 }).map((pairs) =>
    pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&")) },
  // Raw: stray `%`, bad escapes, separators without values.
  { weight: 1, arbitrary: fc.stringMatching(/^[A-Za-z0-9%=&+._~-]{0,30}$/) }
)

// ---------------------------------------------------------------------------
// random files
// ---------------------------------------------------------------------------

type Line = { readonly kind: "item" | "rejected" | "blank", readonly bytes: Uint8Array }
const utf8 = (text: string) => new TextEncoder().encode(text)
const concat = (...parts: ReadonlyArray<Uint8Array>) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const part of parts) {
    out.set(part, at)
    at += part.length
  }
  return out
}
const prompt = fc.oneof(fc.string(), fc.fullUnicodeString()).filter((s) => s.trim() !== "")
const noNewline = (s: string) => !s.includes("\n") && !s.includes("\r")
const line: fc.Arbitrary<Line> = fc.oneof(
  prompt.map((p) => ({ kind: "item" as const, bytes: utf8(JSON.stringify(p)) })),
  fc.tuple(
    prompt,
    fc.option(fc.oneof(fc.string(), fc.integer()), { nil: undefined }),
    fc.option(fc.double({ min: 0, max: 2 }), { nil: undefined })
  )
    .map(([content, id, temperature]) => ({
      kind: "item" as const,
      bytes: utf8(JSON.stringify({ id, messages: [{ role: "user", content }], temperature }))
    })),
  // Bytes that are not UTF-8 inside a JSON string: decoded as U+FFFD, still a prompt.
  prompt.map((p) => ({ kind: "item" as const, bytes: concat(utf8(JSON.stringify(p).slice(0, -1)), new Uint8Array([0xff, 0xc3]), utf8("\"")) })),
  fc.constantFrom("null", "42", "[]", "\"\"", "\"   \"", "{}", "{\"messages\":[]}", "{\"messages\":[{\"role\":\"user\"}]}",
    "{\"id\":{},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":-1}")
    .map((text) => ({ kind: "rejected" as const, bytes: utf8(text) })),
  fc.string().filter(noNewline).map((s) => ({ kind: "rejected" as const, bytes: utf8(`{${s}`) })),
  fc.fullUnicodeString().filter(noNewline).map((s) => ({ kind: "rejected" as const, bytes: utf8(`x${s}`) })),
  fc.string().filter(noNewline).map((s) => ({ kind: "rejected" as const, bytes: concat(utf8(`x${s}`), new Uint8Array([0xc3])) })),
  fc.constantFrom(100_000, 300_000).map((n) => ({ kind: "item" as const, bytes: utf8(JSON.stringify("long ".repeat(n / 5))) })),
  fc.constantFrom(100_000, 300_000).map((n) => ({ kind: "rejected" as const, bytes: utf8(`{${"x".repeat(n)}`) })),
  fc.integer({ min: 65, max: 5000 }).map((depth) => ({
    kind: "rejected" as const,
    bytes: utf8(`{"messages":[{"role":"user","content":"deep"}],"x":${"[".repeat(depth - 1)}${"]".repeat(depth - 1)}}`)
  })),
  fc.constantFrom("", "   ", "\t").map((text) => ({ kind: "blank" as const, bytes: utf8(text) }))
)
const file = fc.record({
  lines: fc.array(line, { maxLength: 12 }),
  crlf: fc.boolean(),
  finalNewline: fc.boolean()
})

// ---------------------------------------------------------------------------
// the barrage
// ---------------------------------------------------------------------------

const runs = (numRuns: number) => ({ fastCheck: { numRuns } })

describe("random input", () => {
  layer(before, { excludeTestServices: true, timeout: "60 seconds" })("against the real server", (it) => {
    it.effect.prop("POST /jobs with random bodies: a 2xx or a JSON error, never a 5xx", [body, idempotencyKey], ([text, key]) =>
      Effect.gen(function*() {
        const request = HttpClientRequest.post("/jobs").pipe(
          HttpClientRequest.bodyText(text, "application/json"),
          key === undefined ? (r) => r : HttpClientRequest.setHeader("idempotency-key", key)
        )
        const response = yield* send(request)
        const answered = yield* answer(response, `POST /jobs ${text.slice(0, 300)}`)
        if (response.status === 202) {
          const submitted = JSON.parse(answered) as { readonly id: string, readonly state: string, readonly created: boolean }
          expect(submitted.id).toMatch(/^job_[0-9a-z]{24}$/)
          if (submitted.created) expect(submitted.state).toBe("queued")
        }
      }), runs(150))

    it.effect.prop("GET /jobs with random queries: a 2xx or a JSON error, never a 5xx", [query], ([q]) =>
      Effect.gen(function*() {
        yield* answer(yield* send(HttpClientRequest.get(`/jobs?${q}`)), `GET /jobs?${q}`)
      }), runs(60))

    it.effect.prop(
      "GET /jobs/:id/results with random ids and queries: a 2xx or a JSON error, never a 5xx",
      [fc.oneof(fc.constantFrom(0, 1, 2, "job_zzzzzzzzzzzzzzzzzzzzzzzz"), fc.string({ minLength: 1 })), query],
      ([id, q]) =>
        Effect.gen(function*() {
          const { ids } = yield* Before
          const path = typeof id === "number" ? ids[id]! : encodeURIComponent(id)
          yield* answer(yield* send(HttpClientRequest.get(`/jobs/${path}/results?${q}`)), `GET /jobs/${path}/results?${q}`)
        }),
      runs(60)
    )

    let files = 0
    it.effect.prop(
      "random JSONL files: 202 with each bad line a failed item naming file:line, or a 400 naming file",
      [file],
      ([{ crlf, finalNewline, lines }]) =>
        Effect.gen(function*() {
          const dir = yield* InputDir
          const name = `random-${files++}.jsonl`
          const newline = utf8(crlf ? "\r\n" : "\n")
          const parts = lines.flatMap((l, i) => i < lines.length - 1 || finalNewline ? [l.bytes, newline] : [l.bytes])
          writeFileSync(join(dir, name), concat(...parts))
          const rejectedLines = lines.flatMap((l, i) => l.kind === "rejected" ? [i + 1] : [])
          const response = yield* send(HttpClientRequest.post("/jobs").pipe(HttpClientRequest.bodyUnsafeJson({ file: name })))
          const text = yield* answer(response, `file ${name}: ${lines.map((l) => l.kind).join(", ")}`)
          if (lines.every((l) => l.kind === "blank")) {
            expect(response.status).toBe(400)
            expect(JSON.parse(text)).toMatchObject({ _tag: "InvalidJob", field: "file", message: `${name} holds no items` })
            return
          }
          expect(response.status, text).toBe(202)
          const submitted = JSON.parse(text) as { readonly id: string, readonly rejected?: number }
          expect(submitted.rejected ?? 0).toBe(rejectedLines.length)
          const api = yield* client(keyA)
          const { items } = yield* api.jobs.deadLetters({ path: { id: submitted.id } })
          const rejected = items.filter((d) => d.errorClass === "Rejected")
          expect(rejected.map((d) => Number(/^random-\d+\.jsonl:(\d+): /.exec(d.message)?.[1]))).toEqual(rejectedLines)
        }),
      runs(40)
    )

    it.effect("the jobs submitted before are unchanged: state, counts, results, dead letters", () =>
      Effect.gen(function*() {
        const { ids, snapshot: then } = yield* Before
        const api = yield* client(keyA)
        // The random jobs end too, so nothing is left running when the server stops. They are cancelled first: one
        // with a random itemTimeout below the simulator's latency on a busy machine retries for minutes.
        const { jobs } = yield* api.jobs.list({ urlParams: { limit: 200 } })
        for (const job of jobs) {
          if (!ids.includes(job.id) && !Job.isTerminal(job.state)) yield* Effect.ignore(api.jobs.cancel({ path: { id: job.id } }))
        }
        for (const job of jobs) yield* waitFor(api.jobs.get({ path: { id: job.id } }), (j) => Job.isTerminal(j.state))
        expect(yield* snapshot(ids)).toEqual(then)
      }))
  })
})
