/**
 * The job API's refusals: authentication, tenant isolation, and bad input on
 * every endpoint — each a JSON error naming what was wrong, never a stack
 * trace, and nothing stored or called because of it.
 */
import { HttpClient, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { describe, expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { client, InputDir, keyA, keyB, layer as serviceLayer, Sim, waitFor } from "../support/JobServiceTest.js"

const send = (request: HttpClientRequest.HttpClientRequest) =>
  Effect.flatMap(HttpClient.HttpClient, (http) => http.execute(request))

const json = (response: HttpClientResponse.HttpClientResponse) =>
  Effect.map(response.text, (text) => {
    expect(response.headers["content-type"], `content-type of ${response.status} ${text}`).toContain("application/json")
    expect(text).not.toMatch(/\n\s+at /) // no stack trace
    return JSON.parse(text) as Record<string, unknown>
  })

const post = (path: string, body: unknown, key: string | null = keyA) =>
  send(HttpClientRequest.post(path).pipe(
    key === null ? (r) => r : HttpClientRequest.bearerToken(key),
    typeof body === "string"
      ? HttpClientRequest.bodyText(body, "application/json")
      : HttpClientRequest.bodyUnsafeJson(body)
  ))

const getAs = (path: string, key: string | undefined, headers: Record<string, string> = {}) =>
  send(HttpClientRequest.get(path).pipe(
    key === undefined ? (r) => r : HttpClientRequest.bearerToken(key),
    HttpClientRequest.setHeaders(headers)
  ))

const jsonl = (lines: ReadonlyArray<string>) => lines.join("\n") + "\n"

const setup = {
  maxItems: 50,
  maxBodyBytes: 20_000,
  files: {
    "good.jsonl": jsonl(['"first prompt"', '{"messages":[{"role":"user","content":"second"}],"max_tokens":20}']),
    "bad.jsonl": jsonl(['"fine"', '{"messages":[]}', '"also fine"']),
    "big.jsonl": jsonl(Array.from({ length: 51 }, (_, i) => JSON.stringify(`p${i}`)))
  }
}

describe("job API refusals", () => {
  layer(serviceLayer(setup), { excludeTestServices: true })("authentication and isolation", (it) => {
    it.effect("no key, a malformed header or an unknown key: 401 JSON, on every endpoint", () =>
      Effect.gen(function*() {
        const id = "job_aaaaaaaaaaaaaaaaaaaaaaaa"
        const paths = ["/jobs", `/jobs/${id}`, `/jobs/${id}/events`, `/jobs/${id}/results`, `/jobs/${id}/dead-letters`, "/profiles"]
        for (const path of paths) {
          for (const key of [undefined, "wrong-key-0123456789"]) {
            const response = yield* getAs(path, key)
            expect(response.status).toBe(401)
            expect((yield* json(response))._tag).toBe("Unauthorized")
          }
          const basic = yield* getAs(path, undefined, { authorization: "Basic dXNlcjpwYXNz" })
          expect(basic.status).toBe(401)
        }
        for (const path of ["/jobs", `/jobs/${id}/cancel`, `/jobs/${id}/dead-letters/replay`]) {
          for (const key of [null, "wrong-key-0123456789"]) {
            const response = yield* post(path, { items: ["x"] }, key)
            expect(response.status).toBe(401)
            expect((yield* json(response))._tag).toBe("Unauthorized")
          }
        }
        const sim = yield* Sim
        expect((yield* sim.metrics).received).toBe(0)
      }))

    it.effect("another tenant's job answers 404 everywhere, exactly like a missing one, and is not listed", () =>
      Effect.gen(function*() {
        const a = yield* client(keyA)
        const b = yield* client(keyB)
        const { id } = yield* a.jobs.submit({ payload: { items: ["tenant a's prompt"] }, headers: {} })
        yield* waitFor(a.jobs.get({ path: { id } }), (j) => j.state === "finished")
        const missing = "job_zzzzzzzzzzzzzzzzzzzzzzzz"
        for (const target of [id, missing]) {
          for (const path of ["", "/events", "/results", "/dead-letters"]) {
            const response = yield* getAs(`/jobs/${target}${path}`, keyB)
            expect(response.status).toBe(404)
            expect(yield* json(response)).toEqual({ _tag: "JobNotFound", id: target, message: `no job ${target}` })
          }
          for (const path of ["/cancel", "/dead-letters/replay"]) {
            const response = yield* post(`/jobs/${target}${path}`, {}, keyB)
            expect(response.status).toBe(404)
          }
        }
        expect((yield* b.jobs.list({ urlParams: {} })).jobs).toEqual([])
        expect((yield* a.jobs.list({ urlParams: {} })).jobs.map((j) => j.id)).toContain(id)
        // The same idempotency key in two tenants names two jobs, whatever their bodies.
        const fromA = yield* a.jobs.submit({ payload: { items: ["k"] }, headers: { "idempotency-key": "shared" } })
        const fromB = yield* b.jobs.submit({ payload: { items: ["k"] }, headers: { "idempotency-key": "shared" } })
        expect(fromB.id).not.toBe(fromA.id)
        expect(fromB.created).toBe(true)
        const otherBody = yield* b.jobs.submit({ payload: { items: ["k"] }, headers: { "idempotency-key": "shared-2" } })
        const fromAOther = yield* a.jobs.submit({ payload: { items: ["something else"] }, headers: { "idempotency-key": "shared-2" } })
        expect(fromAOther.created).toBe(true)
        expect(fromAOther.id).not.toBe(otherBody.id)
      }))
  })

  layer(serviceLayer(setup), { excludeTestServices: true })("bad input", (it) => {
    it.effect("submit: schema errors are 400 naming the field, in the issues and in a one-line message", () =>
      Effect.gen(function*() {
        // The body, the field among the issues' paths, and the path the message starts with.
        const cases: ReadonlyArray<readonly [unknown, string, string]> = [
          [{ items: ["x"], priority: 11 }, "priority", "priority"],
          [{ items: ["x"], priority: 1.5 }, "priority", "priority"],
          [{ items: [42] }, "items", "items[0]"],
          [{ items: [""] }, "items", "items[0]"],
          [{ items: [{ messages: [] }] }, "messages", "items[0].messages[0]"],
          [{ items: ["x"], maxCost: -1 }, "maxCost", "maxCost"],
          [{ items: ["x"], maxAttempts: 0 }, "maxAttempts", "maxAttempts"],
          [{ items: ["x"], timeLimit: { soft: 0 } }, "soft", "timeLimit.soft"],
          [{ items: ["x"], metadata: { n: 1 } }, "n", "metadata.n"],
          // Unknown fields: a misspelt option must not run a job without it.
          [{ items: ["x"], maxcost: 0.01 }, "maxcost", "maxcost"],
          [{ Items: ["x"] }, "Items", "Items"],
          [{ items: ["x"], timeLimit: { soft: 1, hadr: 2 } }, "hadr", "timeLimit.hadr"]
        ]
        for (const [body, field, path] of cases) {
          const response = yield* post("/jobs", body)
          expect(response.status).toBe(400)
          const error = yield* json(response)
          expect(error._tag).toBe("HttpApiDecodeError")
          const issues = error.issues as ReadonlyArray<{ readonly path: ReadonlyArray<unknown> }>
          expect(issues.some((issue) => issue.path.map(String).includes(field))).toBe(true)
          expect(error.message).not.toContain("\n")
          expect((error.message as string).startsWith(`${path} is `) || (error.message as string).startsWith(`${path}: `), String(error.message)).toBe(true)
        }
        const wrong = yield* json(yield* post("/jobs", { items: ["x"], timeLimit: { soft: 1, hadr: 2 } }))
        expect(wrong.message).toBe("timeLimit.hadr is unexpected, expected: \"soft\" | \"hard\"")
        const notJson = yield* post("/jobs", "{ not json")
        expect(notJson.status).toBe(400)
        expect(yield* json(notJson)).toMatchObject({ _tag: "InvalidJson", message: expect.stringMatching(/^the request body is not valid JSON/) })
        const sim = yield* Sim
        expect((yield* sim.metrics).received).toBe(0)
      }))

    it.effect("submit: what the schema cannot tell is a 400 InvalidJob naming the field", () =>
      Effect.gen(function*() {
        const cases: ReadonlyArray<readonly [unknown, string, RegExp]> = [
          [{}, "items", /exactly one of items/],
          [{ items: ["x"], file: "good.jsonl" }, "items", /exactly one of items/],
          [{ items: [] }, "items", /empty/],
          [{ items: ["x"], profile: "nope" }, "profile", /no profile "nope"; known: sim, second/],
          [{ items: ["x"], model: "gpt-9" }, "model", /profile sim has no model "gpt-9"/],
          [{ items: ["x"], profile: "second", model: "sim-other" }, "model", /profile second has no model/],
          [{ items: ["x"], timeLimit: { soft: 10, hard: 5 } }, "timeLimit.soft", /past the hard one/],
          [{ file: "../etc/passwd" }, "file", /is not a file name/],
          [{ file: "missing.jsonl" }, "file", /no file missing.jsonl/]
        ]
        for (const [body, field, message] of cases) {
          const response = yield* post("/jobs", body)
          expect(response.status).toBe(400)
          const error = yield* json(response)
          expect(error).toMatchObject({ _tag: "InvalidJob", field })
          expect(error.message).toMatch(message)
        }
        const a = yield* client(keyA)
        expect((yield* a.jobs.list({ urlParams: {} })).jobs).toEqual([])
      }))

    it.effect("too many items or too large a body: 413", () =>
      Effect.gen(function*() {
        const many = yield* post("/jobs", { items: Array.from({ length: 51 }, (_, i) => `p${i}`) })
        expect(many.status).toBe(413)
        expect(yield* json(many)).toMatchObject({ _tag: "TooManyItems", limit: 50, count: 51 })
        const bigFile = yield* post("/jobs", { file: "big.jsonl" })
        expect(bigFile.status).toBe(413)
        expect(yield* json(bigFile)).toMatchObject({ _tag: "TooManyItems", limit: 50 })
        const huge = yield* post("/jobs", { items: ["x".repeat(25_000)] })
        expect(huge.status).toBe(413)
        expect(yield* json(huge)).toMatchObject({ _tag: "PayloadTooLarge", limit: 20_000 })
      }))

    it.effect("a body or a file line nested deeper than 64 levels: 400 PayloadTooDeep, or a rejected line", () =>
      Effect.gen(function*() {
        // The body, items and the item are three of the levels.
        const body = (depth: number) => `{"items":[{"messages":[{"role":"user","content":"deep"}],"x":${"[".repeat(depth - 3)}${"]".repeat(depth - 3)}}]}`
        const deepest = yield* post("/jobs", body(64))
        expect(deepest.status).toBe(202)
        for (const depth of [65, 5000]) {
          const tooDeep = yield* post("/jobs", body(depth))
          expect(tooDeep.status).toBe(400)
          expect(yield* json(tooDeep)).toEqual({ _tag: "PayloadTooDeep", limit: 64, message: "the request body nests arrays and objects more than 64 levels deep" })
        }
        const dir = yield* InputDir
        writeFileSync(join(dir, "deep.jsonl"), `"fine"\n{"messages":[{"role":"user","content":"x"}],"x":${"[".repeat(5000)}${"]".repeat(5000)}}\n`)
        const a = yield* client(keyA)
        const submitted = yield* a.jobs.submit({ payload: { file: "deep.jsonl" }, headers: {} })
        expect(submitted.rejected).toBe(1)
        const { items } = yield* a.jobs.deadLetters({ path: { id: submitted.id } })
        expect(items.map((d) => d.message)).toEqual(["deep.jsonl:2: nests arrays and objects more than 64 levels deep"])
      }))

    it.effect("bodies are JSON: another Content-Type is a 415; none is read, and checked, as JSON", () =>
      Effect.gen(function*() {
        const raw = (body: string, contentType: string) =>
          send(HttpClientRequest.post("/jobs").pipe(
            HttpClientRequest.bearerToken(keyA),
            HttpClientRequest.bodyUint8Array(new TextEncoder().encode(body), contentType)
          ))
        for (const contentType of ["multipart/form-data; boundary=x", "multipart/form-data", "application/x-www-form-urlencoded", "text/plain"]) {
          const response = yield* raw("items=x", contentType)
          expect(response.status).toBe(415)
          expect(yield* json(response)).toEqual({
            _tag: "UnsupportedMediaType",
            message: `request bodies are JSON (Content-Type: application/json), not ${contentType}`
          })
        }
        // No Content-Type at all: the API reads the body as JSON, so it is checked as JSON.
        const notJson = yield* raw("{ not json", "")
        expect(notJson.status).toBe(400)
        expect((yield* json(notJson))._tag).toBe("InvalidJson")
        const tooDeep = yield* raw(`{"items":${"[".repeat(5000)}${"]".repeat(5000)}}`, "")
        expect(tooDeep.status).toBe(400)
        expect((yield* json(tooDeep))._tag).toBe("PayloadTooDeep")
        const upperCase = yield* raw("{ not json", "Application/JSON; charset=utf-8")
        expect(upperCase.status).toBe(400)
        expect((yield* json(upperCase))._tag).toBe("InvalidJson")
      }))

    it.effect("a file in the input folder is read at submission", () =>
      Effect.gen(function*() {
        const a = yield* client(keyA)
        const { id } = yield* a.jobs.submit({ payload: { file: "good.jsonl" }, headers: {} })
        const job = yield* waitFor(a.jobs.get({ path: { id } }), (j) => j.state === "finished")
        expect(job.counts.succeeded).toBe(2)
      }))

    it.effect("a file is read only if its real path, links resolved, is inside the input folder", () =>
      Effect.gen(function*() {
        const dir = yield* InputDir
        const outside = mkdtempSync(join(tmpdir(), "effect-batch-outside-"))
        writeFileSync(join(outside, "secret.jsonl"), "\"the secret prompt\"\n")
        mkdirSync(join(outside, "private"))
        mkdirSync(join(dir, "folder"))
        symlinkSync(join(outside, "secret.jsonl"), join(dir, "link.jsonl"))
        symlinkSync(join(outside, "private"), join(dir, "outdir"))
        symlinkSync(join(dir, "folder"), join(dir, "indir"))
        symlinkSync(join(dir, "good.jsonl"), join(dir, "alias.jsonl"))
        const a = yield* client(keyA)
        const before = (yield* a.jobs.list({ urlParams: { limit: 200 } })).jobs.length
        const cases: ReadonlyArray<readonly [string, string]> = [
          ["link.jsonl", "link.jsonl is outside the input folder (a link is followed to its real path, which must be inside the folder)"],
          ["outdir", "outdir is outside the input folder (a link is followed to its real path, which must be inside the folder)"],
          ["indir", "indir is a directory, not a file to read"],
          ["folder", "folder is a directory, not a file to read"]
        ]
        for (const [file, message] of cases) {
          const response = yield* post("/jobs", { file })
          expect(response.status).toBe(400)
          expect(yield* json(response)).toEqual({ _tag: "InvalidJob", field: "file", message })
        }
        expect((yield* a.jobs.list({ urlParams: { limit: 200 } })).jobs.length).toBe(before)
        // A link to a file inside the folder is that file.
        const { id } = yield* a.jobs.submit({ payload: { file: "alias.jsonl" }, headers: {} })
        const job = yield* waitFor(a.jobs.get({ path: { id } }), (j) => j.state === "finished")
        expect(job.counts).toMatchObject({ total: 2, succeeded: 2 })
      }))

    it.effect("a bad line of a file is a failed item naming file:line; the rest runs; replay never sends it", () =>
      Effect.gen(function*() {
        const a = yield* client(keyA)
        const sim = yield* Sim
        const before = (yield* sim.metrics).received
        const submitted = yield* a.jobs.submit({ payload: { file: "bad.jsonl" }, headers: {} })
        expect(submitted.rejected).toBe(1)
        const job = yield* waitFor(a.jobs.get({ path: { id: submitted.id } }), (j) => j.state === "finished")
        expect(job.counts).toMatchObject({ total: 3, succeeded: 2, failed: 1 })
        expect((yield* sim.metrics).received - before).toBe(2)
        const { items } = yield* a.jobs.deadLetters({ path: { id: submitted.id } })
        expect(items).toHaveLength(1)
        expect(items[0]).toMatchObject({ index: 1, errorClass: "Rejected", attempts: 0, input: '{"messages":[]}' })
        expect(items[0]!.message).toMatch(/^bad\.jsonl:2: messages/)
        const replayed = yield* a.jobs.replay({ path: { id: submitted.id } })
        expect(replayed.round).toBe(0)
        expect((yield* sim.metrics).received - before).toBe(2)
      }))

    it.effect("unknown fields are refused in bodies and queries, but not inside items: those pass through as before", () =>
      Effect.gen(function*() {
        const unknownField = (response: HttpClientResponse.HttpClientResponse, field: string) =>
          Effect.gen(function*() {
            expect(response.status).toBe(400)
            const error = yield* json(response)
            expect(error._tag).toBe("HttpApiDecodeError")
            expect(typeof error.message).toBe("string")
            expect(error.issues).toEqual([expect.objectContaining({ _tag: "Unexpected", path: [field] })])
            expect(error.message).toMatch(new RegExp(`^${field} is unexpected, expected: "`))
          })
        yield* unknownField(yield* post("/jobs", { items: ["x"], maxcost: 0.01 }), "maxcost")
        yield* unknownField(yield* getAs("/jobs?stat=running", keyA), "stat")
        const a = yield* client(keyA)
        // The simulator answers 400 to a prompt containing INVALID: the item ends as a dead letter showing its stored input.
        const item = {
          messages: [{ role: "user", content: "INVALID: pass me through", name: "alice" }],
          temperature: 0.2,
          response_format: { type: "json_object" },
          seed: 7
        }
        const response = yield* post("/jobs", { items: [item, "a plain prompt"] })
        expect(response.status).toBe(202)
        const { id } = (yield* json(response)) as { readonly id: string }
        yield* unknownField(yield* getAs(`/jobs/${id}/results?folow=true`, keyA), "folow")
        yield* waitFor(a.jobs.get({ path: { id } }), (j) => j.state === "finished")
        const { items } = yield* a.jobs.deadLetters({ path: { id } })
        // Request fields are passed through; a message keeps role and content, as before.
        expect(items.map((d) => d.input)).toEqual([{
          messages: [{ role: "user", content: "INVALID: pass me through" }],
          temperature: 0.2,
          response_format: { type: "json_object" },
          seed: 7
        }])
      }))

    it.effect("other endpoints: bad ids, cursors, states and Last-Event-ID", () =>
      Effect.gen(function*() {
        const unknown = yield* getAs("/jobs/not-a-job-id", keyA)
        expect(unknown.status).toBe(404)
        expect((yield* json(unknown))._tag).toBe("JobNotFound")
        const cursor = yield* getAs("/jobs?cursor=garbage", keyA)
        expect(cursor.status).toBe(400)
        expect(yield* json(cursor)).toMatchObject({ _tag: "InvalidJob", field: "cursor" })
        for (const query of ["state=done", "limit=0", "limit=abc", "limit=500"]) {
          const response = yield* getAs(`/jobs?${query}`, keyA)
          expect(response.status).toBe(400)
          expect((yield* json(response))._tag).toBe("HttpApiDecodeError")
        }
        const a = yield* client(keyA)
        const { id } = yield* a.jobs.submit({ payload: { items: ["one"] }, headers: {} })
        const badLast = yield* getAs(`/jobs/${id}/events`, keyA, { "last-event-id": "yesterday" })
        expect(badLast.status).toBe(400)
        expect(yield* json(badLast)).toMatchObject({ _tag: "InvalidJob", field: "Last-Event-ID" })
        const unknownRoute = yield* getAs("/nowhere", keyA)
        expect(unknownRoute.status).toBe(404)
      }))
  })
})
