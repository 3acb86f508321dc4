/**
 * The dashboard in a real browser (headless Debian Chromium, driven by
 * playwright-core) against the job service on a real socket and the
 * simulator: submit through the form, watch a job finish, cancel a running
 * one (its results so far are kept), see the chart drawn from SSE events.
 *
 * Nothing here is timed: every wait polls the page with a generous timeout.
 */
import * as HttpServer from "@effect/platform/HttpServer"
import { NodeContext, NodeHttpClient, NodeHttpServer } from "@effect/platform-node"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Effect, Layer, ManagedRuntime, Redacted, Schedule } from "effect"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:http"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type Browser, chromium, type Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as ApiKeys from "../../src/service/ApiKeys.js"
import * as SimulatorServer from "../../src/llm/SimulatorServer.js"
import type * as JobApi from "../../src/service/JobApi.js"
import * as JobRunner from "../../src/service/JobRunner.js"
import * as JobService from "../../src/service/JobService.js"
import * as Simulator from "../../src/llm/Simulator.js"

const chromiumPath = "/usr/bin/chromium"
const key = "dashboard-test-key-0123456789"
const wait = { timeout: 30_000 }

const dir = mkdtempSync(join(tmpdir(), "effect-batch-dashboard-"))

const service = Layer.unwrapEffect(Effect.map(Simulator.Simulator, (sim) =>
  JobService.layer({
    profiles: [{ name: "simulator", baseUrl: `${sim.url}/v1`, models: ["sim-chat"], concurrency: 4 }],
    keys: ApiKeys.make([{ tenant: "t1", key: Redacted.make(key) }])
  }))).pipe(
  Layer.provide(SimulatorServer.layer({ latency: { baseMs: 100, jitter: 0 }, capacity: 4 })),
  Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" })),
  Layer.provide(SqliteClient.layer({ filename: join(dir, "service.db") })),
  Layer.provide(NodeHttpClient.layerUndici),
  Layer.provide(NodeContext.layer),
  // A batch-mode job reads the simulator's batches often: they end in a couple of seconds.
  Layer.provide(Layer.succeed(JobRunner.BatchPoll, Schedule.spaced("200 millis")))
)

let runtime: ManagedRuntime.ManagedRuntime<HttpServer.HttpServer, unknown> | undefined
let browser: Browser | undefined
let base = ""

beforeAll(async () => {
  if (!existsSync(chromiumPath)) {
    throw new Error(`${chromiumPath} is missing: this test drives headless Chromium; install the Debian package: apt-get install chromium`)
  }
  runtime = ManagedRuntime.make(service)
  const server = await runtime.runPromise(HttpServer.HttpServer)
  if (server.address._tag !== "TcpAddress") throw new Error("the service is not on a TCP port")
  base = `http://127.0.0.1:${server.address.port}`
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"]
  })
})

afterAll(async () => {
  await browser?.close()
  await runtime?.dispose()
  rmSync(dir, { recursive: true, force: true })
})

const api = async <A>(path: string): Promise<A> => {
  const response = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${key}` } })
  expect(response.status).toBe(200)
  return await response.json() as A
}

const prompts = (n: number, label: string) => Array.from({ length: n }, (_, i) => `${label} prompt ${i}`).join("\n")

const row = (page: Page, id: string) => page.locator(`tr[data-testid="job-row"][data-job-id="${id}"]`)

/** Submits through the form; answers the new job's id (the row the page adds, newest first). */
const submit = async (page: Page, text: string, known: ReadonlyArray<string>) => {
  await page.getByTestId("prompts").fill(text)
  await page.getByTestId("submit").click()
  const fresh = page.locator(`tr[data-testid="job-row"]${known.map((id) => `:not([data-job-id="${id}"])`).join("")}`)
  await fresh.waitFor(wait)
  const id = await fresh.getAttribute("data-job-id")
  expect(id).toMatch(/^job_[0-9a-z]{24}$/)
  return id!
}

/** The number of points of a line of the chart (0 while it has none). */
const chartPoints = async (page: Page, series: string) => {
  const line = page.locator(`[data-testid="chart"] polyline[data-series="${series}"]`)
  if (await line.count() === 0) return 0
  return ((await line.getAttribute("points")) ?? "").trim().split(/\s+/).filter((point) => point !== "").length
}

describe("dashboard", () => {
  it("submits, follows, cancels and charts jobs in a real browser", async () => {
    const page = await browser!.newPage()
    const errors: Array<string> = []
    page.on("pageerror", (error) => errors.push(error.message))
    await page.goto(`${base}/`)
    await page.getByTestId("api-key").fill(key)
    await page.getByTestId("connect").click()

    // A submission the server refuses (a cost limit must be positive) shows its message.
    await page.getByTestId("max-cost").fill("0")
    await page.getByTestId("prompts").fill("refused")
    await page.getByTestId("submit").click()
    await page.locator("[data-testid=\"submit-error\"]:not(:empty)").waitFor(wait)
    expect(await page.getByTestId("submit-error").textContent()).toContain("maxCost: Expected a positive number")
    expect(await page.getByTestId("job-row").count()).toBe(0)
    await page.getByTestId("max-cost").fill("")

    // A small job runs to the end: a full bar, nothing left to cancel or replay.
    const small = await submit(page, prompts(5, "Small"), [])
    await row(page, small).and(page.locator("[data-state=\"finished\"]")).waitFor(wait)
    await row(page, small).locator("[data-testid=\"progress\"][data-done=\"5\"][data-total=\"5\"]").waitFor(wait)
    expect(await row(page, small).getByTestId("cancel").isDisabled()).toBe(true)
    expect(await row(page, small).getByTestId("replay").isDisabled()).toBe(true)

    // A bigger one is cancelled while it runs; what it settled is kept.
    const total = 300
    const big = await submit(page, prompts(total, "Big"), [small])
    await row(page, big).and(page.locator("[data-state=\"running\"]")).waitFor(wait)
    await expect.poll(async () => (await api<JobApi.Job>(`/jobs/${big}`)).counts.succeeded, wait).toBeGreaterThanOrEqual(8)
    await row(page, big).getByTestId("cancel").click()
    await row(page, big).and(page.locator("[data-state=\"cancelled\"]")).waitFor(wait)
    expect(await row(page, big).getByTestId("cancel").isDisabled()).toBe(true)
    // Calls in flight when it was cancelled are aborted, the items not started skipped: then nothing moves.
    await expect.poll(async () => (await api<JobApi.Job>(`/jobs/${big}`)).counts.pending, wait).toBe(0)
    const cancelled = await api<JobApi.Job>(`/jobs/${big}`)
    expect(cancelled.state).toBe("cancelled")
    expect(cancelled.counts.succeeded).toBeGreaterThan(0)
    expect(cancelled.counts.succeeded).toBeLessThan(total)
    const results = await fetch(`${base}/jobs/${big}/results`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.text())
    const succeeded = results.split("\n").filter((line) => line !== "").map((line) => JSON.parse(line) as { status: string })
      .filter((line) => line.status === "succeeded")
    expect(succeeded.length).toBe(cancelled.counts.succeeded)

    // The big job, selected when submitted, is charted from its live events: throughput and limit lines.
    await page.locator("[data-testid=\"detail\"] code", { hasText: big }).waitFor(wait)
    await expect.poll(() => chartPoints(page, "throughput"), wait).toBeGreaterThanOrEqual(2)
    await expect.poll(() => chartPoints(page, "limit"), wait).toBeGreaterThanOrEqual(2)

    // A key in the fragment is taken, kept, and removed from the address bar; a job already over is
    // charted from its stored events.
    const second = await browser!.newContext().then((context) => context.newPage())
    second.on("pageerror", (error) => errors.push(error.message))
    await second.goto(`${base}/#key=${encodeURIComponent(key)}`)
    await row(second, big).and(second.locator("[data-state=\"cancelled\"]")).waitFor(wait)
    expect(new URL(second.url()).hash).toBe("")
    expect(await second.getByTestId("api-key").inputValue()).toBe(key)
    await row(second, small).click()
    await second.locator("[data-testid=\"detail\"] code", { hasText: small }).waitFor(wait)
    await expect.poll(() => chartPoints(second, "throughput"), wait).toBeGreaterThanOrEqual(2)
    // Where its items' time went: a stacked bar whose largest part, for calls that only wait on the simulator, is
    // the time in flight.
    await second.locator("[data-testid=\"time-bar\"] span[data-part=\"inFlight\"]").waitFor(wait)
    expect(await second.getByTestId("time-legend").textContent()).toMatch(/in flight \d+ %/)
    expect(await second.getByTestId("time-verdict").textContent()).toMatch(/^\d+ % in flight: .* \(\d+ items\)$/)
    await second.context().close()

    // A job in batch mode runs through the provider's batches; its detail lists them.
    await page.getByTestId("mode").selectOption("batch")
    const batched = await submit(page, prompts(5, "Batched"), [small, big])
    await row(page, batched).and(page.locator("[data-state=\"finished\"]")).waitFor(wait)
    await page.locator("[data-testid=\"shard\"]", { hasText: "ingested" }).waitFor(wait)
    expect(await page.getByTestId("shard").count()).toBe(1)
    expect(await page.getByTestId("shard").textContent()).toMatch(/sim-chat.*5.*ingested.*batch_sim_/)

    expect(errors).toEqual([])
    await page.close()
  }, 90_000)
})
