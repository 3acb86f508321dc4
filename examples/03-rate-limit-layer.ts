/**
 * Rate limits as a Layer: requests and tokens per second together, and the
 * shared cooldown gate a 429 closes.
 *
 * 1. `RateLimiter.layer({ requestsPerSecond: 20, tokensPerSecond: 1_000 })`:
 *    each call reserves its `estimate` (100 tokens) before it starts and
 *    `settle`s on what it really used (40 tokens) after. Starts are spread
 *    evenly, never a burst: first at the token pace of the estimates (100 ms),
 *    then, as settled refunds come back, at the request limit (50 ms).
 * 2. A real HTTP server on 127.0.0.1 answers its first request with
 *    `429 retry-after: 1`, then 200s. The task calls it with `@effect/platform`'s
 *    `HttpClient` and maps non-2xx responses with `TaskError.fromHttpResponse`.
 *    The 429 closes the gate: no call of any fiber starts for a second.
 */
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { HttpClient } from "@effect/platform"
import { NodeHttpClient, NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Layer } from "effect"
import { Batch, Progress, RateLimiter, TaskError } from "effect-batch"

const since = (start: number) => `+${String(Date.now() - start).padStart(4)} ms`

// --- 1. pacing: requests and tokens, estimate then settle -------------------

const pacing = Effect.gen(function*() {
  yield* Console.log("RateLimiter.layer({ requestsPerSecond: 20, tokensPerSecond: 1_000 }), estimate 100 tokens, settle 40")
  const start = Date.now()
  let last: number | undefined
  const complete = (prompt: number) =>
    Effect.gen(function*() {
      const now = Date.now()
      const gap = last === undefined ? "" : `  (${now - last} ms after the previous)`
      last = now
      yield* Console.log(`${since(start)}  call ${String(prompt).padStart(2)} starts${gap}`)
      yield* Effect.sleep("30 millis")
      return { text: `answer ${prompt}`, usage: 40 }
    })
  const { report } = yield* Batch.run(Array.from({ length: 16 }, (_, i) => i), complete, {
    concurrency: 4,
    estimate: () => ({ tokens: 100 }),
    settle: (response) => ({ tokens: response.usage })
  }).pipe(Effect.provide(RateLimiter.layer({ requestsPerSecond: 20, tokensPerSecond: 1_000 })))
  yield* Console.log(`16 calls in ${report.wallMs} ms; time spent waiting on the limiter: ${report.rateLimitWaitMs} ms\n`)
})

// --- 2. the cooldown gate, against a real server ----------------------------

/** A server on a random loopback port: its first request gets a 429 with `retry-after: 1`. */
const server = Effect.acquireRelease(
  Effect.async<Http.Server & { url: string }>((resume) => {
    let requests = 0
    const server = Http.createServer((req, res) => {
      requests++
      if (requests === 1) {
        res.writeHead(429, { "retry-after": "1", "content-type": "application/json" })
        res.end(JSON.stringify({ error: { code: "rate_limit_exceeded", message: "slow down" } }))
      } else {
        res.writeHead(200, { "content-type": "application/json" })
        res.end(JSON.stringify({ path: req.url }))
      }
    })
    server.listen(0, "127.0.0.1", () => {
      resume(Effect.succeed(Object.assign(server, { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` })))
    })
  }),
  (server) => Effect.async<void>((resume) => {
    server.close(() => resume(Effect.void))
  })
)

/** One call; a non-2xx response becomes a classified `TaskError`. */
const fetchItem = (baseUrl: string, id: number) =>
  Effect.gen(function*() {
    const response = yield* HttpClient.get(`${baseUrl}/items/${id}`)
    if (response.status < 200 || response.status >= 300) {
      const body = yield* response.text
      return yield* Effect.fail(TaskError.fromHttpResponse(response.status, response.headers, body))
    }
    return yield* response.json
  })

const gate = Effect.scoped(Effect.gen(function*() {
  const { url } = yield* server
  yield* Console.log(`cooldown gate: server on ${url} answers its first request with 429 retry-after: 1`)
  const start = Date.now()
  const starts: Array<number> = []
  const events = Progress.layer((event) => {
    switch (event._tag) {
      case "AttemptStarted":
        starts.push(Date.now() - start)
        return Console.log(`${since(start)}  item ${event.index} attempt ${event.attempt} starts`)
      case "GateClosed":
        return Console.log(`${since(start)}  GateClosed by item ${event.index} for ${event.durationMs} ms`)
      case "Retrying":
        return Console.log(`${since(start)}  item ${event.index} ${event.errorClass}, retry in ${Math.round(event.delayMs)} ms`)
      default:
        return Effect.void
    }
  })
  const { report } = yield* Batch.run(Array.from({ length: 10 }, (_, i) => i), (id) => fetchItem(url, id), {
    concurrency: 4
  }).pipe(Effect.provide(Layer.mergeAll(events, RateLimiter.layer({ requestsPerSecond: 20 }), NodeHttpClient.layerUndici)))
  const gaps = starts.slice(1).map((t, i) => t - starts[i]!)
  yield* Console.log(`${report.succeeded}/${report.total} succeeded; longest pause between starts: ${Math.max(...gaps)} ms; ` +
    `gate wait ${report.gateWaitMs} ms over ${report.gateClosures} closure`)
}))

NodeRuntime.runMain(Effect.zipRight(pacing, gate))
