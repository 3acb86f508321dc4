/**
 * `/metrics`: the service's Prometheus page, read by a Prometheus text-format
 * parser — behind an API key (or public when asked), the store's figures,
 * submissions, SSE subscribers, and the chunks' batch metrics under
 * `batch="job"`, the profile and the model. Real sockets, real time, the
 * simulator.
 */
import { HttpClient, HttpClientRequest } from "@effect/platform"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Fiber, Stream } from "effect"
import parse from "parse-prometheus-text-format"
import { client, keyA, layer as serviceLayer, waitFor } from "../support/JobServiceTest.js"
import { sum } from "../support/prometheus.js"

const scrape = (key?: string) =>
  Effect.flatMap(HttpClient.HttpClient, (http) =>
    http.execute(HttpClientRequest.get("/metrics").pipe(key === undefined ? (r) => r : HttpClientRequest.bearerToken(key))))

const families = Effect.gen(function*() {
  const response = yield* scrape(keyA)
  expect(response.status).toBe(200)
  expect(response.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8")
  return parse(yield* response.text)
})

const prompts = (n: number) => Array.from({ length: n }, (_, i) => `metrics prompt ${i}`)

describe("job service /metrics", () => {
  layer(serviceLayer(), { excludeTestServices: true })("behind the API key", (it) => {
    it.effect("no key or a wrong one: 401 naming what is needed", () =>
      Effect.gen(function*() {
        for (const key of [undefined, "not-a-key-at-all-000"]) {
          const response = yield* scrape(key)
          expect(response.status).toBe(401)
          expect(response.headers["www-authenticate"]).toBe("Bearer")
          expect(yield* response.json).toMatchObject({ _tag: "Unauthorized", message: expect.stringContaining("/metrics") })
        }
      }))

    it.effect("a job's run: submissions, jobs by state, its items under batch=job with the profile and model", () =>
      Effect.gen(function*() {
        const before = yield* families
        const api = yield* client(keyA)
        const job = yield* api.jobs.submit({ payload: { items: prompts(30) }, headers: {} })
        yield* waitFor(api.jobs.get({ path: { id: job.id } }), (j) => j.state === "finished", "the job to finish")
        const after = yield* families
        const delta = (name: string, labels: Record<string, string> = {}) => sum(after, name, labels) - sum(before, name, labels)

        expect(delta("effect_batch_service_submissions_total", { outcome: "accepted" })).toBe(1)
        expect(sum(after, "effect_batch_service_jobs", { state: "finished" })).toBeGreaterThanOrEqual(1)
        expect(sum(after, "effect_batch_service_jobs", { state: "running" })).toBe(0)
        expect(sum(after, "effect_batch_service_pending_items")).toBe(0)
        const job30 = { batch: "job", profile: "sim", model: "sim-chat" }
        expect(delta("effect_batch_items_total", { ...job30, outcome: "succeeded", reason: "call" })).toBe(30)
        expect(delta("effect_batch_attempts_total", job30)).toBe(30)
        // (The parser folds a histogram's label sets into one sample, so only its shape is read here.)
        const histogram = after.find((f) => f.name === "effect_batch_item_duration_ms")!
        expect(histogram.type).toBe("HISTOGRAM")
        expect(Object.keys(histogram.metrics[0]!.buckets!)).toContain("+Inf")
        expect(delta("effect_batch_tokens_total", { ...job30, kind: "actual" })).toBeGreaterThan(0)
        expect(delta("effect_batch_time_spent_ms_total", { ...job30, part: "in_flight" })).toBeGreaterThan(0)
        // The chunk's batch has ended: its gauges are back to what they were.
        expect(sum(after, "effect_batch_in_flight", job30)).toBe(0)
        const family = after.find((f) => f.name === "effect_batch_items_total")!
        expect([family.type, family.help]).toEqual(["COUNTER", expect.stringContaining("by outcome")])

        const refused = yield* Effect.either(api.jobs.submit({ payload: { items: [] }, headers: {} }))
        expect(refused._tag).toBe("Left")
        expect(sum(yield* families, "effect_batch_service_submissions_total", { outcome: "refused" }) -
          sum(after, "effect_batch_service_submissions_total", { outcome: "refused" })).toBe(1)
      }))

    it.effect("an SSE subscriber counts while its stream is open", () =>
      Effect.gen(function*() {
        const api = yield* client(keyA)
        const job = yield* api.jobs.submit({ payload: { items: prompts(300) }, headers: {} })
        const subscriber = yield* Effect.fork(Effect.flatMap(HttpClient.HttpClient, (http) =>
          http.execute(HttpClientRequest.get(`/jobs/${job.id}/events`).pipe(HttpClientRequest.bearerToken(keyA))).pipe(
            Effect.flatMap((response) => response.stream.pipe(Stream.runDrain))
          )))
        const scraped = Effect.provideService(families, HttpClient.HttpClient, yield* HttpClient.HttpClient)
        yield* waitFor(scraped, (all) => sum(all, "effect_batch_service_sse_subscribers") === 1, "the subscriber to count")
        // The job's end ends its event stream.
        yield* Fiber.join(subscriber)
        yield* waitFor(scraped, (all) => sum(all, "effect_batch_service_sse_subscribers") === 0, "the subscriber to leave")
      }))
  })

  layer(serviceLayer({ publicMetrics: true }), { excludeTestServices: true })("made public", (it) => {
    it.effect("no key needed", () =>
      Effect.gen(function*() {
        const response = yield* scrape()
        expect(response.status).toBe(200)
        expect(parse(yield* response.text).some((f) => f.name === "effect_batch_service_jobs")).toBe(true)
      }))
  })
})
