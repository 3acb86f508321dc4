/**
 * Adaptive concurrency against a provider whose capacity you do not know.
 *
 * A real HTTP server on 127.0.0.1 plays the provider: 16 slots, 40 ms per
 * request while at most 16 are in flight; past that, requests queue and the
 * latency grows with the number in flight; past 48 in flight it sheds load
 * with `503 overloaded`. Its best throughput is 16 / 40 ms = 400 requests/s,
 * whatever the client does.
 *
 * The same 1 500 requests run through `Batch.run` four ways: a fixed
 * concurrency of 8 (too low: half the throughput), a fixed 64 (too high: a
 * queue at the provider and a storm of 503s), and a limit moved by
 * `ConcurrencyLimiter.layerAdaptive` with `LimitAlgorithm.gradient` (latency)
 * and `LimitAlgorithm.aimd` (drops). Then the adaptive limits over time.
 */
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { HttpClient } from "@effect/platform"
import { NodeHttpClient, NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer } from "effect"
import { Batch, ConcurrencyLimiter, LimitAlgorithm, RetryPolicy, TaskError } from "effect-batch"
import type { BatchReport } from "effect-batch"

const SLOTS = 16
const BASE_LATENCY_MS = 40
const SHED_ABOVE = 48
const REQUESTS = 1_500

// --- the provider -------------------------------------------------------------

interface ProviderStats {
  served: number
  overloaded: number
  peakInFlight: number
}

const provider = Effect.acquireRelease(
  Effect.async<{ readonly url: string, readonly server: Http.Server, readonly stats: ProviderStats }>((resume) => {
    const stats: ProviderStats = { served: 0, overloaded: 0, peakInFlight: 0 }
    let inFlight = 0
    const server = Http.createServer((_req, res) => {
      if (inFlight >= SHED_ABOVE) {
        stats.overloaded++
        res.writeHead(503, { "content-type": "application/json" })
        res.end(JSON.stringify({ error: { code: "overloaded", message: "server overloaded" } }))
        return
      }
      inFlight++
      stats.peakInFlight = Math.max(stats.peakInFlight, inFlight)
      // Up to SLOTS at once are served in BASE_LATENCY_MS; beyond that they queue.
      const latency = BASE_LATENCY_MS * Math.max(1, inFlight / SLOTS)
      setTimeout(() => {
        inFlight--
        stats.served++
        res.writeHead(200, { "content-type": "application/json" })
        res.end("{\"ok\":true}")
      }, latency)
    })
    server.keepAliveTimeout = 30_000
    server.listen(0, "127.0.0.1", () =>
      resume(Effect.succeed({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server, stats })))
  }),
  ({ server }) => Effect.async<void>((resume) => {
    server.closeAllConnections()
    server.close(() => resume(Effect.void))
  })
)

/** One request; a non-2xx answer becomes a classified `TaskError` (503 `overloaded` → `Overloaded`). */
const request = (url: string) =>
  Effect.gen(function*() {
    const response = yield* HttpClient.get(url)
    if (response.status >= 300) {
      return yield* Effect.fail(TaskError.fromHttpResponse(response.status, response.headers, yield* response.text))
    }
    return yield* response.json
  })

// --- the runs -------------------------------------------------------------------

interface Row {
  readonly name: string
  readonly report: BatchReport.BatchReport
  readonly overloaded: number
  readonly peakInFlight: number
}

/** Time-weighted average of the concurrency limit over the run. */
const averageLimit = (report: BatchReport.BatchReport) => {
  const points = report.concurrency
  let weighted = 0
  points.forEach(([at, limit], i) => {
    weighted += limit * ((points[i + 1]?.[0] ?? report.wallMs) - at)
  })
  return report.wallMs > 0 ? weighted / report.wallMs : points[0]?.[1] ?? 0
}

/** The limit in force at `t` ms. */
const limitAt = (report: BatchReport.BatchReport, t: number) =>
  report.concurrency.reduce((limit, [at, value]) => (at <= t ? value : limit), report.concurrency[0]?.[1] ?? 0)

interface Limits {
  readonly concurrency?: number
  readonly limiter?: Layer.Layer<ConcurrencyLimiter.ConcurrencyLimiter>
}

const run = (name: string, limits: Limits) =>
  Effect.scoped(Effect.gen(function*() {
    const { url, stats } = yield* provider
    const items = Array.from({ length: REQUESTS }, (_, i) => `${url}/v1/work/${i}`)
    const batch = Batch.run(items, request, limits.concurrency === undefined ? {} : { concurrency: limits.concurrency })
    const { report } = yield* limits.limiter === undefined ? batch : Effect.provide(batch, limits.limiter)
    yield* Console.log(`  ${name.padEnd(34)} done in ${(report.wallMs / 1000).toFixed(2)} s`)
    return { name, report, overloaded: stats.overloaded, peakInFlight: stats.peakInFlight } satisfies Row
  }))

const table = (rows: ReadonlyArray<Row>) => {
  const header = ["strategy", "makespan", "503s", "attempts", "p50", "p99", "failed", "limit final/avg", "peak in flight"]
  const lines = rows.map(({ name, report, overloaded, peakInFlight }) => [
    name,
    `${(report.wallMs / 1000).toFixed(2)} s`,
    String(overloaded),
    String(report.attempts),
    `${Math.round(report.latencyMs.p50)} ms`,
    `${Math.round(report.latencyMs.p99)} ms`,
    String(report.failed),
    `${report.concurrency.at(-1)?.[1]} / ${averageLimit(report).toFixed(1)}`,
    String(peakInFlight)
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)))
  return [header, ...lines].map((cells) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "))
}

/** The adaptive limits side by side, sampled every 250 ms, one bar character per 2 permits. */
const chart = (rows: ReadonlyArray<Row>) => {
  const end = Math.max(...rows.map((r) => r.report.wallMs))
  const lines = [`  time  ${rows.map((r) => r.name.padEnd(40)).join("")}`]
  for (let t = 0; t <= end; t += 250) {
    const bars = rows.map(({ report }) => {
      if (t > report.wallMs) return "".padEnd(40)
      const limit = limitAt(report, t)
      return `${"█".repeat(Math.round(limit / 2))} ${limit}`.padEnd(40)
    })
    lines.push(`${(t / 1000).toFixed(2).padStart(6)}  ${bars.join("")}`)
  }
  return lines
}

// Latency-driven: shrinks once latency passes rttTolerance × the no-load latency, before
// anything is dropped. `smoothing` is applied per sample; at ~400 samples/s the default 0.2
// swings the limit.
const gradient = ConcurrencyLimiter.layerAdaptive(LimitAlgorithm.gradient({ initial: 20, max: 128, smoothing: 0.05 }))

// Drop-driven: +1 per round trip until the provider sheds load (503, 429, timeout), then × 0.9.
// (`timeoutMs` would also count slow successes as drops.)
const aimd = ConcurrencyLimiter.layerAdaptive(LimitAlgorithm.aimd({ initial: 20, max: 128 }))

// Either is provided like any layer: `Batch.run(items, request).pipe(Effect.provide(gradient))`.

const program = Effect.gen(function*() {
  yield* Console.log(`${REQUESTS} requests to a provider with ${SLOTS} slots of ${BASE_LATENCY_MS} ms ` +
    `(best possible: ${(REQUESTS * BASE_LATENCY_MS / SLOTS / 1000).toFixed(2)} s), 503 above ${SHED_ABOVE} in flight\n`)
  const rows = [
    yield* run("fixed 8", { concurrency: 8 }),
    yield* run("fixed 64", { concurrency: 64 }),
    yield* run("adaptive gradient", { limiter: gradient }),
    yield* run("adaptive aimd", { limiter: aimd })
  ]
  yield* Console.log(["", ...table(rows), ""].join("\n"))
  yield* Console.log("concurrency limit over time\n")
  yield* Console.log(chart(rows.slice(2)).join("\n"))
}).pipe(
  Effect.provide(Layer.merge(
    NodeHttpClient.layerUndici,
    RetryPolicy.layer({ maxAttempts: 10, base: "50 millis", maxDelay: "1 second" })
  ))
)

NodeRuntime.runMain(program)
