/**
 * The command line as a whole, in-process: argument parsing, what is printed,
 * and the exit codes (0 all succeeded, 1 some failed or skipped, 2 usage or
 * setup error, 130 interrupted).
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { NodeContext, NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Exit, Fiber, FiberId, Layer } from "effect"
import { Redis } from "ioredis"
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { type AddressInfo, createServer, type Server } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll } from "vitest"
import * as Cli from "../../src/cli/Cli.js"
import * as CliError from "../../src/cli/CliError.js"
import { against, apiKey, cli, withSimulator } from "./CliHarness.js"
import * as TestConsole from "./TestConsole.js"

const dir = mkdtempSync(join(tmpdir(), "effect-batch-cli-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

let files = 0
const file = (text?: string) => {
  const path = join(dir, `f-${++files}.jsonl`)
  if (text !== undefined) writeFileSync(path, text)
  return path
}

const platform = Layer.mergeAll(NodeContext.layer, NodeHttpClient.layerUndici)

describe("effect-batch run", () => {
  it.live("exit code 0 when every item succeeded; the report on stdout", () =>
    withSimulator((simulator) =>
      Effect.gen(function*() {
        const out = file()
        const { code, err, out: stdout } = yield* cli(against(simulator, file("\"a\"\n\"b\"\n\"c\"\n"), out))
        expect(err).toBe("")
        expect(code).toBe(0)
        expect(stdout).toContain("items        3: 3 succeeded, 0 failed, 0 skipped")
        expect(stdout).toContain(`results     3 lines in ${out}`)
        expect(readFileSync(out, "utf8").trim().split("\n").length).toBe(3)
      })).pipe(Effect.provide(platform)))

  it.live("exit code 1 when an item failed (a malformed line, an INVALID prompt)", () =>
    withSimulator((simulator) =>
      Effect.gen(function*() {
        const { code, out } = yield* cli(against(simulator, file("\"a\"\n{oops\n\"INVALID b\"\n"), file()))
        expect(code).toBe(1)
        expect(out).toContain("items        3: 1 succeeded, 2 failed, 0 skipped")
        expect(out).toContain("rejected    1 input lines")
      })).pipe(Effect.provide(platform)))

  it.live("exit code 2, before any call, for a missing input, an unwritable output, bad flags", () =>
    withSimulator((simulator) =>
      Effect.gen(function*() {
        const input = file("\"a\"\n")
        const missing = join(dir, "nope.jsonl")
        const notFound = yield* cli(against(simulator, missing, file()))
        expect(notFound).toMatchObject({ code: 2, err: `effect-batch: input file not found: ${missing}` })

        const unwritable = join(dir, "missing-dir", "out.jsonl")
        const cannotWrite = yield* cli(against(simulator, input, unwritable))
        expect(cannotWrite.code).toBe(2)
        expect(cannotWrite.err).toContain(unwritable)

        const badConcurrency = yield* cli([...against(simulator, input, file()), "--concurrency", "lots"])
        expect(badConcurrency).toMatchObject({ code: 2 })
        expect(badConcurrency.err).toContain("--concurrency")

        const badNumber = yield* cli([...against(simulator, input, file()), "--rpm", "fast"])
        expect(badNumber.code).toBe(2)
        const noOut = yield* cli(["run", input, "--simulate"])
        expect(noOut.code).toBe(2)
        expect(noOut.err).toContain("--out")
        const noCommand = yield* cli([])
        expect(noCommand).toMatchObject({ code: 2, err: expect.stringContaining("missing command") })

        expect((yield* simulator.metrics).received).toBe(0)
      })).pipe(Effect.provide(platform)))

  it.live("--simulate with --sim-* flags runs against the in-process simulator", () =>
    Effect.gen(function*() {
      const out = file()
      const result = yield* cli([
        "run",
        file("\"a\"\n\"b\"\n"),
        "--out",
        out,
        "--simulate",
        "--sim-latency-ms",
        "1",
        "--sim-failure-rate",
        "0",
        "--progress",
        "none"
      ])
      expect(result.code).toBe(0)
      expect(result.out).toContain("simulator   received 2 requests (200×2)")
    }).pipe(Effect.provide(platform)))
})

describe("effect-batch simulate", () => {
  it.live("prints its URL on the first line of stdout and serves until interrupted (exit code 130)", () =>
    Effect.gen(function*() {
      const console = yield* TestConsole.make
      const fiber = yield* console.capture(Cli.main(["node", "effect-batch", "simulate", "--port", "0", "--rpm", "600", "--seed", "7"]))
        .pipe(Effect.fork)
      while (console.out.length === 0) yield* Effect.sleep("10 millis")
      const url = console.out[0]!
      expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/v1$/)
      const response = yield* HttpClient.get(`${url}/models`)
      expect(response.status).toBe(200)
      const models = (yield* response.json) as { data: Array<{ id: string }> }
      expect(models.data.map((m) => m.id)).toContain("sim-chat")
      yield* Fiber.interrupt(fiber)
      const exit = yield* Fiber.await(fiber)
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(CliError.exitCodeOf(exit)).toBe(130)
      expect(console.err.join("\n")).toContain("600 requests/min")
    }).pipe(Effect.provide(platform)))

  it.live("an invalid option or a busy port is exit code 2", () =>
    Effect.gen(function*() {
      const console = yield* TestConsole.make
      const code = yield* console.capture(Cli.main(["node", "effect-batch", "simulate", "--failure-rate", "2"]))
      expect(code).toBe(2)
      expect(console.err.join("\n")).toContain("failureRate must be between 0 and 1")
    }).pipe(Effect.provide(platform)))
})

// CI sets REDIS_URL; without it these are reported as skipped.
const redisUrl = process.env.REDIS_URL
describe.skipIf(redisUrl === undefined)("effect-batch serve --redis", () => {
  const profilesFile = (baseUrl: string, requestsPerMinute?: number) => {
    const path = join(dir, `profiles-${++files}.json`)
    const profile = { name: "sim", baseUrl, apiKeyEnv: "SIM_KEY", models: ["sim-chat"], requestsPerMinute }
    writeFileSync(path, JSON.stringify({ profiles: [profile] }))
    return path
  }
  const serve = (...args: ReadonlyArray<string>) => ["serve", "--port", "0", "--db", join(dir, `serve-${++files}.db`), ...args]

  it.live("shares every profile's rate limits through Redis: a job's calls are reserved in the profile's hash", () =>
    withSimulator((simulator) =>
      Effect.gen(function*() {
        process.env.SIM_KEY = apiKey
        const console = yield* TestConsole.make
        const fiber = yield* console.capture(
          Cli.main(["node", "effect-batch", ...serve("--profiles", profilesFile(`${simulator.url}/v1`, 6_000), "--redis", redisUrl!)])
        ).pipe(Effect.fork)
        while (!console.out.some((line) => line.includes("API key"))) yield* Effect.sleep("10 millis")
        const url = /on (http:\/\/\S+)/.exec(console.out.join("\n"))![1]!
        const key = /API key +(\S+)/.exec(console.out.join("\n"))![1]!
        expect(console.out.join("\n")).toContain(`limits     rate and concurrency shared through Redis at ${redisUrl}`)
        const client = (yield* HttpClient.HttpClient).pipe(HttpClient.mapRequest(HttpClientRequest.bearerToken(key)))
        const submitted = yield* client.execute(HttpClientRequest.post(`${url}/jobs`).pipe(
          HttpClientRequest.bodyUnsafeJson({ items: ["a", "b", "c"] })
        ))
        const { id } = (yield* submitted.json) as { id: string }
        let state = ""
        while (state !== "finished") {
          state = ((yield* Effect.flatMap(client.get(`${url}/jobs/${id}`), (r) => r.json)) as { state: string }).state
          if (state === "failed" || state === "cancelled") break
          yield* Effect.sleep("50 millis")
        }
        expect(state).toBe("finished")
        const redis = new Redis(redisUrl!)
        const ttl = yield* Effect.promise(() => redis.pttl("effect-batch:rate:profile.sim").finally(() => redis.quit()))
        expect(ttl).toBeGreaterThan(0)
        yield* Fiber.interrupt(fiber)
      })).pipe(Effect.provide(platform)), 30_000)

  it.live("a Redis that does not answer is exit code 2 naming it, its password masked", () =>
    withSimulator((simulator) =>
      Effect.gen(function*() {
        process.env.SIM_KEY = apiKey
        const unreachable = yield* cli(serve("--profiles", profilesFile(`${simulator.url}/v1`, 600), "--redis", "redis://:s3cret@127.0.0.1:1"))
        expect(unreachable.code).toBe(2)
        expect(unreachable.err).toContain("--redis redis://:***@127.0.0.1:1: cannot reach Redis")
        expect(unreachable.err).not.toContain("s3cret")
      })).pipe(Effect.provide(platform)))
})

describe("effect-batch serve --role", () => {
  it.effect("a split role on SQLite or without --profiles, --metrics-port off a runner, a bad profiles file, a database that does not answer: exit code 2 naming what is wrong", () =>
    Effect.gen(function*() {
      const onSqlite = yield* cli(["serve", "--port", "0", "--db", join(dir, "roles.db"), "--role", "api"])
      expect(onSqlite.code).toBe(2)
      expect(onSqlite.err).toContain("--role api splits the service over several processes, which share a PostgreSQL database")
      expect(existsSync(join(dir, "roles.db"))).toBe(false)
      const unnamed = yield* cli(["serve", "--port", "0", "--db", "postgres://127.0.0.1:1/none", "--role", "runner"])
      expect(unnamed.code).toBe(2)
      expect(unnamed.err).toContain("--role runner needs --profiles: every process of the service reads the same profiles")
      // A runner's own /metrics port, asked of a process that serves /metrics on --port anyway.
      const metricsPort = yield* cli(["serve", "--port", "0", "--db", join(dir, "metrics-port.db"), "--metrics-port", "9464"])
      expect(metricsPort.code).toBe(2)
      expect(metricsPort.err).toContain("--metrics-port is for --role runner, which serves no API: this process (role all) serves /metrics on --port")
      expect(existsSync(join(dir, "metrics-port.db"))).toBe(false)
      // A profiles file with a bad field: the field's path and what was wrong, one line.
      const badProfiles = join(dir, "bad-profiles.json")
      writeFileSync(badProfiles, JSON.stringify({ profiles: [{ name: "sim", baseUrl: "t/v1", models: ["sim-chat"] }] }))
      writeFileSync(badProfiles.replace("bad-", "good-"), JSON.stringify({ profiles: [{ name: "sim", baseUrl: "http://127.0.0.1:1/v1", models: ["sim-chat"] }] }))
      const bad = yield* cli(["serve", "--port", "0", "--db", join(dir, "bad.db"), "--profiles", badProfiles])
      expect(bad.code).toBe(2)
      expect(bad.err).toContain(`--profiles ${badProfiles}: profiles.0.baseUrl: Expected a string matching the pattern`)
      expect(bad.err.split("\n").filter((line) => line.trim() !== "").length).toBe(1)
      // A database that does not answer: named, its password masked.
      const unreachable = yield* cli(["serve", "--port", "0", "--db", "postgres://u:s3cret@127.0.0.1:1/none", "--role", "api", "--profiles", badProfiles.replace("bad-", "good-")])
      expect(unreachable.code).toBe(2)
      expect(unreachable.err).toContain("cannot start the service on postgres://u:***@127.0.0.1:1/none: SqlError")
      expect(unreachable.err).not.toContain("s3cret")
      const everywhere = yield* cli(["serve", "--port", "0", "--host", "0.0.0.0", "--db", "postgres://127.0.0.1:1/none", "--role", "runner",
        "--profiles", badProfiles])
      expect(everywhere.code).toBe(2)
      expect(everywhere.err).toContain("--host 0.0.0.0 binds every interface, which other runners cannot dial: give --runner-host")
      const unknown = yield* cli(["serve", "--port", "0", "--role", "worker"])
      expect(unknown.code).toBe(2)
      expect(unknown.err).toMatch(/all.*api.*runner/s)
    }).pipe(Effect.provide(platform)))

  it.effect("a port already taken: exit code 2 naming the address, its flag and why", () =>
    Effect.gen(function*() {
      // Something else listens on the port first.
      const taken = yield* Effect.acquireRelease(
        Effect.async<Server>((resume) => {
          const server = createServer()
          server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
        }),
        (server) => Effect.async<void>((resume) => void server.close(() => resume(Effect.void)))
      )
      const port = (taken.address() as AddressInfo).port
      const result = yield* cli(["serve", "--port", String(port), "--db", join(dir, "taken.db")])
      expect(result.code).toBe(2)
      expect(result.err).toContain(`cannot listen on 127.0.0.1:${port} (--port): listen EADDRINUSE`)
    }).pipe(Effect.scoped, Effect.provide(platform)))
})

describe("effect-batch runs / export", () => {
  it.live("a checkpointed run is listed and exported in input order; a foreign file is exit code 2", () =>
    withSimulator((simulator) =>
      Effect.gen(function*() {
        const db = join(dir, "runs.db")
        // Two lines that cannot be sent, one blank line, and ids: the export must line up with the run's own results.
        const input = file([
          "\"one\"",
          "{\"id\": \"x\", \"messages\": [",
          "",
          "{\"id\": \"q3\", \"messages\": [{\"role\": \"user\", \"content\": \"three\"}]}",
          "\"This prompt is INVALID\"",
          "42",
          "\"six\""
        ].join("\n"))
        const results = file()
        const run = yield* cli([...against(simulator, input, results), "--run-id", "nightly", "--db", db])
        expect(run.code).toBe(1)
        expect(run.out).toContain("6: 3 succeeded, 3 failed")
        const runs = yield* cli(["runs", "--db", db])
        expect(runs.code).toBe(0)
        expect(runs.out).toMatch(/nightly\s+finished\s+3 done, 3 failed of 6/)
        const out = file()
        const exported = yield* cli(["export", "nightly", "--db", db, "--out", out])
        expect(exported.code).toBe(0)
        const parse = (path: string) => readFileSync(path, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>)
        const lines = parse(out)
        expect(lines.map((l) => [l["index"], l["line"], l["id"], l["status"]])).toEqual([
          [0, 1, undefined, "succeeded"],
          [1, 2, undefined, "failed"],
          [2, 4, "q3", "succeeded"],
          [3, 5, undefined, "failed"],
          [4, 6, undefined, "failed"],
          [5, 7, undefined, "succeeded"]
        ])
        // Line for line what the run wrote, but where the answer came from.
        const written = parse(results).sort((a, b) => (a["index"] as number) - (b["index"] as number))
        expect(lines).toEqual(written.map(({ source: _, ...record }) => record))

        const missing = yield* cli(["export", "nope", "--db", db, "--out", file()])
        expect(missing.code).toBe(2)
        expect(missing.err).toContain("no run \"nope\"")
        // Lines appended to the input since are not the run's.
        writeFileSync(input, `${readFileSync(input, "utf8")}\n"appended"\n`)
        expect((yield* cli(["export", "nightly", "--db", db, "--out", out])).code).toBe(0)
        expect(parse(out)).toEqual(lines)
        // An input changed since the run: refused, naming the line, and the earlier export is left as it was.
        writeFileSync(input, readFileSync(input, "utf8").replace("six", "seven"))
        const stale = yield* cli(["export", "nightly", "--db", db, "--out", out])
        expect(stale.code).toBe(2)
        expect(stale.err).toContain(`line 7 of ${input} is not the line it recorded`)
        expect(parse(out)).toEqual(lines)
        expect(readdirSync(dir).filter((name) => name.endsWith(".tmp"))).toEqual([])

        const forgotten = yield* cli(["runs", "forget", "nightly", "--db", db])
        expect(forgotten.code).toBe(0)
        expect((yield* cli(["runs", "--db", db])).out).toBe("no runs")
        expect((yield* cli(["runs", "forget", "nightly", "--db", db])).code).toBe(2)

        const absent = join(dir, "absent.db")
        const none = yield* cli(["runs", "--db", absent])
        expect(none.code).toBe(2)
        expect(none.err).toContain(`no checkpoint database ${absent}`)
        expect(existsSync(absent)).toBe(false)

        const junk = join(dir, "junk.db")
        writeFileSync(junk, "this is not a database, just text that is long enough to look like a header........")
        const foreign = yield* cli(["runs", "--db", junk])
        expect(foreign.code).toBe(2)
        expect(foreign.err).toContain("not a SQLite database")
      }).pipe(Effect.provide(platform))))
})

describe("CliError.exitCodeOf", () => {
  it("maps outcomes to exit codes", () => {
    expect(CliError.exitCodeOf(Exit.void)).toBe(0)
    expect(CliError.exitCodeOf(Exit.fail(new CliError.ItemsUnsuccessful({ failed: 1, skipped: 0 })))).toBe(1)
    expect(CliError.exitCodeOf(Exit.fail(new CliError.UsageError({ message: "x" })))).toBe(2)
    expect(CliError.exitCodeOf(Exit.die(new Error("boom")))).toBe(1)
    expect(CliError.exitCodeOf(Exit.interrupt(FiberId.none))).toBe(130)
    expect(CliError.exitCodeOf(Exit.failCause(Cause.parallel(Cause.fail(new CliError.UsageError({ message: "x" })), Cause.die("d"))))).toBe(2)
  })
})
