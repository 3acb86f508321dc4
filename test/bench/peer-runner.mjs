// One run of one runner against a running simulator, in a process of its own:
// `node peer-runner.mjs <scenario> <variant> <runner> <simulator url>`.
// Prints one JSON line: { runner, makespanMs, succeeded, failed, attempts, validFailed, invalidCalls }.
// `attempts` and `invalidCalls` (calls made for each INVALID item) are counted here, per call of the
// task; the calls and statuses the provider saw are read from its /metrics by peers.mjs.
import { NodeHttpClient } from "@effect/platform-node"
import { RunnableLambda } from "@langchain/core/runnables"
import Bottleneck from "bottleneck"
import { Effect, Layer } from "effect"
import pLimit from "p-limit"
import PQueue from "p-queue"
import pRetry, { AbortError } from "p-retry"
import { monitorEventLoopDelay } from "node:perf_hooks"
import { Batch, ConcurrencyLimiter, LimitAlgorithm, RateLimiter } from "../../dist/index.js"
import { OpenAiCompat } from "../../dist/llm/index.js"
import { CONCURRENCY, find } from "./scenarios.mjs"

const [scenarioName, variant, runnerName, url] = process.argv.slice(2)
const spec = find(scenarioName, variant)
const prompts = spec.prompts()
const attempts = new Array(prompts.length).fill(0)
const ok = new Array(prompts.length).fill(false)
const extra = {}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

class HttpError extends Error {
  constructor(status, headers, body) {
    super(`HTTP ${status}: ${body.slice(0, 200)}`)
    this.status = status
    const retryAfterMs = Number(headers.get("retry-after-ms"))
    this.retryAfterMs = Number.isFinite(retryAfterMs) && retryAfterMs > 0 ? retryAfterMs : undefined
  }
}

/** A client error that retrying cannot fix (any 4xx but 429). */
const isFinal = (error) => error instanceof HttpError && error.status >= 400 && error.status < 500 && error.status !== 429

/** One chat completion through Node's fetch (undici); throws `HttpError` on a non-2xx answer. */
const call = async (i) => {
  attempts[i]++
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "sim-chat", messages: [{ role: "user", content: prompts[i] }] })
  })
  const text = await response.text()
  if (!response.ok) throw new HttpError(response.status, response.headers, text)
  return JSON.parse(text)
}

/** `call`, with an `AbortError` for the failures p-retry should not retry, as a careful user writes it. */
const callForPRetry = async (i) => {
  try {
    return await call(i)
  } catch (error) {
    throw isFinal(error) ? new AbortError(error) : error
  }
}

const settleAll = (promises) =>
  Promise.allSettled(promises).then((settled) => settled.forEach((s, i) => (ok[i] = s.status === "fulfilled")))

const indices = prompts.map((_, i) => i)

/** effect-batch at a fixed concurrency (20 unless given), or adaptive (not told the capacity). */
const effectBatch = (adaptive, concurrency = CONCURRENCY) => async () => {
  const llm = OpenAiCompat.chat({ baseUrl: `${url}/v1`, model: "sim-chat" })
  const task = (prompt, i) =>
    Effect.suspend(() => {
      attempts[i]++
      return llm.task(prompt, i)
    })
  let layer = NodeHttpClient.layerUndici
  if (spec.toldRpm !== undefined) layer = Layer.merge(layer, RateLimiter.layer({ requestsPerMinute: spec.toldRpm }))
  // What the README and examples/04-adaptive-concurrency.ts recommend (and the CLI's `--concurrency adaptive`).
  if (adaptive) layer = Layer.merge(layer, ConcurrencyLimiter.layerAdaptive(LimitAlgorithm.recommended()))
  const options = adaptive ? { ...llm.options } : { ...llm.options, concurrency }
  // Default RetryPolicy (5 attempts, 500 ms × 2^n with jitter, retry-after honored).
  const { report, results } = await Effect.runPromise(Batch.run(prompts, task, options).pipe(Effect.provide(layer)))
  results.forEach((result, i) => (ok[i] = result._tag === "Succeeded"))
  if (!adaptive) return
  // The concurrency limit over the run: final, and time-weighted average.
  const points = report.concurrency
  let weighted = 0
  points.forEach(([at, value], k) => (weighted += value * ((points[k + 1]?.[0] ?? report.wallMs) - at)))
  extra.limit = { final: points.at(-1)?.[1], average: report.wallMs > 0 ? weighted / report.wallMs : points[0]?.[1] }
}

const runners = {
  "effect-batch": effectBatch(false),
  "effect-batch adaptive": effectBatch(true),

  "p-limit+p-retry": async () => {
    const limit = pLimit(CONCURRENCY)
    await settleAll(indices.map((i) => limit(() => pRetry(() => callForPRetry(i), { retries: 5 }))))
  },

  "p-queue+p-retry": async () => {
    const told = spec.toldRpm === undefined ? {} : { interval: 1000, intervalCap: Math.floor(spec.toldRpm / 60) }
    const queue = new PQueue({ concurrency: CONCURRENCY, ...told })
    await settleAll(indices.map((i) => queue.add(() => pRetry(() => callForPRetry(i), { retries: 5 }))))
  },

  "Bottleneck": async () => {
    const told = spec.toldRpm === undefined ? {} : { minTime: 60_000 / spec.toldRpm }
    const limiter = new Bottleneck({ maxConcurrent: CONCURRENCY, ...told })
    // Returning a number from "failed" retries the job after that many ms; honor the provider's retry-after-ms.
    limiter.on("failed", (error, jobInfo) => {
      if (isFinal(error) || jobInfo.retryCount >= 5) return undefined
      return error.retryAfterMs ?? 500 * 2 ** jobInfo.retryCount
    })
    await settleAll(indices.map((i) => limiter.schedule(() => call(i))))
  },

  "LangChain.js": async () => {
    // RunnableRetry retries through its own bundled p-retry, so p-retry's AbortError means nothing to it,
    // and in batch mode it offers no per-item way to stop retrying a 400: the plain `call` it is.
    const runnable = RunnableLambda.from((i) => call(i)).withRetry({ stopAfterAttempt: 6 })
    const results = await runnable.batch(indices, { maxConcurrency: CONCURRENCY }, { returnExceptions: true })
    results.forEach((result, i) => (ok[i] = !(result instanceof Error)))
  },

  "Promise.all": async () => {
    const withRetry = async (i) => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await call(i)
        } catch (error) {
          if (isFinal(error) || attempt >= 4) throw error
          await sleep(500 * 2 ** attempt)
        }
      }
    }
    await settleAll(indices.map(withRetry))
  }
}

// `effect-batch@48`: effect-batch at a fixed 48, e.g. to see what a well-chosen limit gets.
const fixedAt = /^effect-batch@(\d+)$/.exec(runnerName)
const run = fixedAt === null ? runners[runnerName] : effectBatch(false, Number(fixedAt[1]))
if (run === undefined) throw new Error(`unknown runner ${runnerName}`)
const invalid = indices.filter((i) => prompts[i].includes("INVALID"))
// Stopped for taking too long: report the calls counted so far.
process.on("SIGTERM", () => {
  const calls = attempts.reduce((a, b) => a + b, 0)
  console.log(JSON.stringify({ runner: runnerName, partial: true, attempts: calls, invalidCalls: invalid.map((i) => attempts[i]) }))
  process.exit(0)
})
// The runner's own event-loop delay: how late its callbacks ran (its CPU load, and the machine's).
const loopDelay = monitorEventLoopDelay({ resolution: 10 })
loopDelay.enable()
const start = performance.now()
await run()
const makespanMs = performance.now() - start
loopDelay.disable()
extra.loopDelayMs = { mean: loopDelay.mean / 1e6, p99: loopDelay.percentile(99) / 1e6 }
const succeeded = ok.filter(Boolean).length
console.log(JSON.stringify({
  runner: runnerName,
  makespanMs,
  succeeded,
  failed: prompts.length - succeeded,
  attempts: attempts.reduce((a, b) => a + b, 0),
  validFailed: indices.filter((i) => !ok[i] && !prompts[i].includes("INVALID")).length,
  invalidCalls: invalid.map((i) => attempts[i]),
  ...extra
}))
