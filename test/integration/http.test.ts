import { HttpClient, HttpClientResponse } from "@effect/platform"
import { NodeHttpClient } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema } from "effect"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import * as Batch from "../../src/Batch.js"
import * as RetryPolicy from "../../src/RetryPolicy.js"
import * as TaskError from "../../src/TaskError.js"

const HttpClientResponseBody = Schema.Struct({ path: Schema.String })

/**
 * A provider on 127.0.0.1: `/ok` answers 200; `/flaky` 503 then 200; `/limited` 429 with
 * rate-limit headers then 200; `/bad` 400. Every request is logged with its arrival time.
 */
interface Provider {
  readonly url: string
  readonly log: Array<{ path: string, at: number, status: number }>
  readonly close: () => void
}

const provider = Effect.acquireRelease(
  Effect.async<Provider>((resume) => {
    const log: Array<{ path: string, at: number, status: number }> = []
    const seen = new Map<string, number>()
    const server = createServer((req, res) => {
      const path = req.url ?? "/"
      const count = (seen.get(path) ?? 0) + 1
      seen.set(path, count)
      let status = 200
      if (path === "/limited" && count === 1) {
        status = 429
        res.setHeader("retry-after-ms", "300")
        res.setHeader("x-ratelimit-remaining-requests", "0")
        res.setHeader("x-ratelimit-reset-requests", "300ms")
      } else if (path === "/flaky" && count === 1) status = 503
      else if (path === "/bad") status = 400
      log.push({ path, at: Date.now(), status })
      res.statusCode = status
      res.setHeader("content-type", "application/json")
      res.end(JSON.stringify(status === 200 ? { path } : { error: { message: `status ${status}`, code: status === 400 ? "invalid_request" : null } }))
    })
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo
      resume(Effect.succeed({ url: `http://127.0.0.1:${port}`, log, close: () => server.close() }))
    })
  }),
  (server) => Effect.sync(server.close)
)

describe("integration: a real HTTP server through @effect/platform's HttpClient", () => {
  it.live("429 with headers, 503, 400 and 200 are classified, retried or not, and paced by the gate", () =>
    Effect.scoped(Effect.gen(function*() {
      const server = yield* provider
      const client = yield* HttpClient.HttpClient
      const call = (path: string) =>
        client.get(`${server.url}${path}`).pipe(
          Effect.flatMap((response) =>
            response.status >= 200 && response.status < 300
              ? HttpClientResponse.schemaBodyJson(HttpClientResponseBody)(response).pipe(Effect.orDie)
              : Effect.flatMap(Effect.orElseSucceed(response.json, () => undefined), (body) =>
                  Effect.fail(TaskError.fromHttpResponse(response.status, response.headers, body))))
        )
      const started = Date.now()
      const { report, results } = yield* Batch.run(["/limited", "/flaky", "/bad", "/ok"], call, { concurrency: 1 }).pipe(
        Effect.provide(RetryPolicy.layer({ base: "50 millis", jitter: 0 }))
      )
      expect(results.map((r) => r._tag)).toEqual(["Succeeded", "Succeeded", "Failed", "Succeeded"])
      expect(results[0]).toMatchObject({ attempts: 2, value: { path: "/limited" } })
      expect(results[1]).toMatchObject({ attempts: 2 })
      expect(results[2]).toMatchObject({ attempts: 1, errorClass: "Permanent", error: { status: 400, code: "invalid_request" } })
      expect(server.log.filter((r) => r.path === "/bad").length).toBe(1)
      // The bare 503 (no overload code, no wait) is a server error like a 500, not a sign of load (issue #11).
      expect(report.retriesBy).toMatchObject({ RateLimited: 1, Transient: 1, Overloaded: 0 })
      expect(report.gateClosures).toBe(1)
      // After the 429 no request reached the server for the 300 ms the provider asked for.
      const limitedAt = server.log[0]!.at
      const next = server.log.slice(1).map((r) => r.at)
      expect(Math.min(...next) - limitedAt).toBeGreaterThanOrEqual(280)
      expect(Date.now() - started).toBeLessThan(10_000)
    }).pipe(Effect.provide(NodeHttpClient.layerUndici))))
})
