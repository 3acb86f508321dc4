/**
 * Tasks for OpenAI-compatible APIs (`/chat/completions`, `/embeddings`) over
 * `@effect/platform`'s `HttpClient`, ready to hand to `Batch`.
 *
 * `chat(config)` gives a `task` and the batch `options` that go with it:
 * `estimate` (prompt tokens + `max_tokens`, and their price) reserved on the
 * rate limiter and the budget before the call, `settle` with the response's
 * `usage` after it. Every response teaches the batch's `RateLimiter` the
 * limits the provider announces in `x-ratelimit-limit-*`, so a run that was
 * given no limits paces itself after the first answers. Failures are
 * classified from status, error code and headers (`TaskError.fromHttpResponse`),
 * never from message text alone; interrupting a task aborts its request.
 * Each call carries an `Idempotency-Key` derived from the item, stable across
 * retries and re-runs.
 *
 * `embed(config)` groups texts into requests by count and by token budget,
 * runs the groups as a batch, and maps each vector back to its text; a group
 * rejected as a whole (a 400 for one bad input) is retried text by text, so
 * one bad input fails only itself.
 *
 * What it does not promise: token counts before the call are estimates
 * (about 4 characters per token), not a tokenizer's; `@effect/ai-openai`
 * speaks only the Responses API, hence this thin client of our own.
 *
 * @since 0.1.0
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type * as HttpClientResponse from "@effect/platform/HttpClientResponse"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Batch from "../Batch.js"
import type { BatchReport } from "../BatchReport.js"
import * as Budget from "../Budget.js"
import * as ConcurrencyLimiter from "../ConcurrencyLimiter.js"
import * as Idempotency from "../Idempotency.js"
import * as RateLimiter from "../RateLimiter.js"
import * as ResultCache from "../ResultCache.js"
import * as TaskError from "../TaskError.js"
import * as TaskResult from "../TaskResult.js"
import type { ChatInput, ChatRequest } from "./ChatRequest.js"

// ---------------------------------------------------------------------------
// configuration
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface Config {
  /** Base URL of the API, e.g. `https://api.openai.com/v1`. */
  readonly baseUrl: string
  readonly apiKey?: Redacted.Redacted | undefined
  readonly model: string
  /** Request fields sent with every call unless the item sets them (`temperature`, `max_tokens`, ...). */
  readonly defaults?: Readonly<Record<string, unknown>> | undefined
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** Prices for the budget and the report. Default: `Budget.defaultPrices[model]`, else none (cost 0). */
  readonly prices?: Budget.Prices | undefined
  /** Output tokens to reserve when a request sets no `max_tokens`. Default 256. */
  readonly expectedOutputTokens?: number | undefined
  /** Follow the provider's `x-ratelimit-limit-*` headers. Default `true`. */
  readonly learnLimits?: boolean | undefined
}

// ---------------------------------------------------------------------------
// chat completions
// ---------------------------------------------------------------------------

/**
 * The request schemas live in `ChatRequest`, which needs nothing but
 * `effect/Schema` (the job service's contract and the JSONL reader use it
 * without loading this adapter); re-exported here for the adapter's users.
 *
 * @since 0.1.0
 * @category schemas
 */
export { ChatRequest, Message } from "./ChatRequest.js"

/**
 * @since 0.1.0
 * @category models
 */
export type { ChatInput } from "./ChatRequest.js"

const Usage = Schema.Struct({
  prompt_tokens: Schema.Number,
  completion_tokens: Schema.optionalWith(Schema.Number, { default: () => 0 }),
  total_tokens: Schema.Number,
  prompt_tokens_details: Schema.optional(Schema.NullOr(Schema.Struct({ cached_tokens: Schema.optional(Schema.Number) })))
})

const ChatResponseBody = Schema.Struct({
  id: Schema.String,
  model: Schema.String,
  choices: Schema.NonEmptyArray(Schema.Struct({
    message: Schema.Struct({ content: Schema.NullOr(Schema.String) }),
    finish_reason: Schema.NullOr(Schema.String)
  })),
  usage: Usage
})

/**
 * @since 0.1.0
 * @category models
 */
export interface TokenUsage {
  readonly promptTokens: number
  readonly cachedPromptTokens: number
  readonly completionTokens: number
  readonly totalTokens: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ChatCompletion {
  readonly id: string
  readonly model: string
  readonly content: string
  readonly finishReason: string | null
  readonly usage: TokenUsage
  /** USD at the configured prices (0 without prices). */
  readonly cost: number
}

/**
 * About 4 characters per token, plus a few per message for the chat framing.
 * A guess, deliberately on the high side of typical English text.
 *
 * @since 0.1.0
 * @category tokens
 */
export const estimateTokens = (text: string): number => Math.ceil(text.length / 4)

const promptTokensOf = (messages: ReadonlyArray<{ readonly content: string }>) =>
  messages.reduce((sum, message) => sum + estimateTokens(message.content) + 4, 3)

const requestOf = (input: ChatInput): ChatRequest =>
  typeof input === "string" ? { messages: [{ role: "user", content: input }] } : input

const usageOf = (usage: typeof Usage.Type): TokenUsage => ({
  promptTokens: usage.prompt_tokens,
  cachedPromptTokens: usage.prompt_tokens_details?.cached_tokens ?? 0,
  completionTokens: usage.completion_tokens,
  totalTokens: usage.total_tokens
})

/**
 * @since 0.1.0
 * @category models
 */
export interface Chat {
  /** The task: one chat completion per item. */
  readonly task: (input: ChatInput, index: number) => Effect.Effect<ChatCompletion, TaskError.TaskError, HttpClient.HttpClient>
  /** `estimate` and `settle` for `Batch` (spread them into its options). */
  readonly options: Batch.Options<ChatInput, ChatCompletion, TaskError.TaskError>
  /** The cache key of an item: model, request defaults and the request itself. */
  readonly cacheKey: (input: ChatInput) => string
  /** The body that would be sent for an item. */
  readonly body: (input: ChatInput) => Record<string, unknown>
  /** A response body as the task's value (a provider batch's answer lines are decoded with it, as live answers are). */
  readonly decode: (json: unknown) => Effect.Effect<ChatCompletion, TaskError.TaskError>
}

const validate = (config: Config): void => {
  const fail = (what: string): never => {
    throw new TypeError(`OpenAiCompat: ${what}`)
  }
  if (!/^https?:\/\/\S+$/.test(config.baseUrl)) fail(`baseUrl must be an http(s) URL, got ${JSON.stringify(config.baseUrl)}`)
  if (config.model.trim() === "") fail("model must not be empty")
  const expected = config.expectedOutputTokens
  if (expected !== undefined && !(Number.isInteger(expected) && expected > 0)) {
    fail(`expectedOutputTokens must be an integer > 0, got ${expected}`)
  }
}

/**
 * Reads the per-minute limits a provider announces, teaches them to the
 * batch's limiter (remembering the last values, so unchanged headers cost a
 * string comparison), and tells it what the provider says is left of the
 * request limit (a widening burst stops widening when little is).
 */
const limitLearner = (enabled: boolean) => {
  let seen = ""
  return (headers: HttpClientResponse.HttpClientResponse["headers"]): Effect.Effect<void> => {
    if (!enabled) return Effect.void
    const requests = headers["x-ratelimit-limit-requests"]
    const tokens = headers["x-ratelimit-limit-tokens"]
    const remaining = Number(headers["x-ratelimit-remaining-requests"] ?? Number.NaN)
    if (requests === undefined && tokens === undefined && Number.isNaN(remaining)) return Effect.void
    const announced = `${requests}/${tokens}`
    const changed = announced !== seen
    seen = announced
    return Effect.flatMap(Effect.serviceOption(RateLimiter.RateLimiter), (found) => {
      if (Option.isNone(found)) return Effect.void
      const limiter = found.value
      const told = Number.isNaN(remaining) ? Effect.void : limiter.remaining("requests", remaining)
      if (!changed) return told
      return Effect.zipRight(
        RateLimiter.learn(limiter, {
          requestsPerMinute: requests === undefined ? undefined : Number(requests),
          tokensPerMinute: tokens === undefined ? undefined : Number(tokens)
        }),
        told
      )
    })
  }
}

const transportError = (cause: unknown) =>
  new TaskError.Transient({ message: `request failed: ${cause instanceof Error ? cause.message : String(cause)}`, cause })

/** The provider's own time for a request (`openai-processing-ms`), for an adaptive limit sampling it. */
const reportProcessingTime = (headers: HttpClientResponse.HttpClientResponse["headers"]): Effect.Effect<void> => {
  const header = headers["openai-processing-ms"]
  return header === undefined ? Effect.void : ConcurrencyLimiter.reportProviderTime(Number(header))
}

/**
 * POSTs `body` to `url`; a 2xx answer's JSON body, or the classified failure.
 * Headers of every answer go to `observe` first, and the provider's own time
 * for the request to the adaptive limit, if any.
 */
const post = (
  url: string,
  body: unknown,
  headers: Record<string, string>,
  observe: (headers: HttpClientResponse.HttpClientResponse["headers"]) => Effect.Effect<void>
): Effect.Effect<unknown, TaskError.TaskError, HttpClient.HttpClient> =>
  Effect.flatMap(HttpClient.HttpClient, (client) =>
    client.execute(HttpClientRequest.post(url).pipe(HttpClientRequest.setHeaders(headers), HttpClientRequest.bodyUnsafeJson(body)))
      .pipe(
        Effect.mapError(transportError),
        Effect.flatMap((response) =>
          Effect.zipRight(
            Effect.zipRight(reportProcessingTime(response.headers), observe(response.headers)),
            response.status >= 200 && response.status < 300
              ? Effect.mapError(response.json, transportError)
              : Effect.flatMap(
                  Effect.orElseSucceed(response.text, () => ""),
                  (text) => {
                    let parsed: unknown = text
                    try {
                      parsed = JSON.parse(text)
                    } catch {
                      // Not JSON: the status and headers alone classify it.
                    }
                    return Effect.fail(TaskError.fromHttpResponse(response.status, response.headers, parsed))
                  }
                )
          )
        )
      ))

const decodeBody = <A, I>(schema: Schema.Schema<A, I>, what: string) => {
  const decode = Schema.decodeUnknown(schema)
  return (json: unknown) =>
    Effect.mapError(decode(json), (error) =>
      new TaskError.Permanent({ message: `unexpected ${what} response: ${error.message.split("\n")[0]}`, cause: error }))
}

const baseHeaders = (config: Config): Record<string, string> => ({
  ...(config.apiKey === undefined ? {} : { authorization: `Bearer ${Redacted.value(config.apiKey)}` }),
  ...config.headers
})

/**
 * In a checkpointed run or a job, derived from the run id and the item's key
 * (the same across retries, crashes and resumes); otherwise from the request
 * and the item's index (the same across retries and re-runs of the same input).
 */
const idempotencyKey = (index: number, otherwise: () => string): Effect.Effect<string> =>
  Effect.map(Idempotency.keyAt(index), Option.getOrElse(otherwise))

const endpoint = (config: Config, path: string) => `${config.baseUrl.replace(/\/+$/, "")}${path}`

/**
 * A chat-completions task and its batch options.
 *
 * @since 0.1.0
 * @category constructors
 */
export const chat = (config: Config): Chat => {
  validate(config)
  const prices = config.prices ?? Budget.defaultPrices[config.model]
  const expectedOutput = config.expectedOutputTokens ?? 256
  const url = endpoint(config, "/chat/completions")
  const headers = baseHeaders(config)
  const observe = limitLearner(config.learnLimits ?? true)
  const decode = decodeBody(ChatResponseBody, "chat completion")

  const body = (input: ChatInput): Record<string, unknown> => ({ model: config.model, ...config.defaults, ...requestOf(input) })
  const defaultMaxTokens = typeof config.defaults?.max_tokens === "number" ? config.defaults.max_tokens : undefined
  /** The request's `max_tokens` (its own, else the defaults'), read without building the body. */
  const maxTokensOf = (input: ChatInput) => (typeof input === "string" ? undefined : input.max_tokens) ?? defaultMaxTokens
  const cacheKey = (input: ChatInput) => ResultCache.key(body(input))
  const priced = (usage: Budget.Usage) => (prices === undefined ? 0 : Budget.costOf(prices, usage))

  const completionOf = (json: unknown) =>
    Effect.map(decode(json), (response): ChatCompletion => {
      const usage = usageOf(response.usage)
      return {
        id: response.id,
        model: response.model,
        content: response.choices[0].message.content ?? "",
        finishReason: response.choices[0].finish_reason,
        usage,
        cost: priced({
          inputTokens: usage.promptTokens,
          cachedInputTokens: usage.cachedPromptTokens,
          outputTokens: usage.completionTokens
        })
      }
    })

  const task = (input: ChatInput, index: number) => {
    const request = body(input)
    return Effect.flatMap(idempotencyKey(index, () => `${ResultCache.key(request).slice(0, 32)}-${index}`), (key) =>
      post(url, request, { ...headers, "idempotency-key": key }, observe)).pipe(Effect.flatMap(completionOf))
  }

  const options: Batch.Options<ChatInput, ChatCompletion, TaskError.TaskError> = {
    estimate: (input) => {
      const promptTokens = promptTokensOf(requestOf(input).messages)
      const outputTokens = maxTokensOf(input) ?? expectedOutput
      return { tokens: promptTokens + outputTokens, usd: priced({ inputTokens: promptTokens, outputTokens }) }
    },
    // Providers charge the rate limit `max_tokens` at admission, not what was produced: settle to the same.
    settle: (completion, input) => ({
      tokens: completion.usage.promptTokens + (maxTokensOf(input) ?? completion.usage.completionTokens),
      usd: completion.cost
    })
  }

  return { task, options, cacheKey, body, decode: completionOf }
}

// ---------------------------------------------------------------------------
// embeddings
// ---------------------------------------------------------------------------

const EmbeddingResponseBody = Schema.Struct({
  model: Schema.String,
  data: Schema.Array(Schema.Struct({ index: Schema.Int, embedding: Schema.Array(Schema.Number) })),
  usage: Schema.Struct({ prompt_tokens: Schema.Number, total_tokens: Schema.Number })
})

/**
 * @since 0.1.0
 * @category models
 */
export interface EmbedConfig extends Config {
  /** Inputs per request, 1–2048. Default 256. */
  readonly maxInputs?: number | undefined
  /** Estimated tokens per request. Default 100 000 (OpenAI allows 300 000). */
  readonly maxTokensPerRequest?: number | undefined
  /** Sent as `dimensions` when set. */
  readonly dimensions?: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Embedding {
  readonly vector: ReadonlyArray<number>
  /** Prompt tokens of the request this text was part of, shared out by estimated size. */
  readonly tokens: number
  /** Texts in the request this one was sent in. */
  readonly groupSize: number
}

/**
 * Groups of consecutive indices: at most `maxInputs` texts and (unless a
 * single text is larger on its own) `maxTokens` estimated tokens per group.
 *
 * @since 0.1.0
 * @category embeddings
 */
export const groupTexts = (
  texts: ReadonlyArray<string>,
  maxInputs: number,
  maxTokens: number
): Array<Array<number>> => {
  const groups: Array<Array<number>> = []
  let current: Array<number> = []
  let tokens = 0
  for (let i = 0; i < texts.length; i++) {
    const size = estimateTokens(texts[i]!)
    if (current.length > 0 && (current.length >= maxInputs || tokens + size > maxTokens)) {
      groups.push(current)
      current = []
      tokens = 0
    }
    current.push(i)
    tokens += size
  }
  if (current.length > 0) groups.push(current)
  return groups
}

/**
 * Embeds every text: `results[i]` is the outcome of `texts[i]`. Groups run as
 * a batch with `options` (concurrency, timeout, ...) under the limits, policy
 * and budget in context; the report is the groups' batch report, plus the
 * second pass when whole groups were rejected.
 *
 * @since 0.1.0
 * @category constructors
 */
export const embed = (config: EmbedConfig) => {
  validate(config)
  const maxInputs = config.maxInputs ?? 256
  const maxTokens = config.maxTokensPerRequest ?? 100_000
  if (!(Number.isInteger(maxInputs) && maxInputs >= 1 && maxInputs <= 2048)) {
    throw new TypeError(`OpenAiCompat: maxInputs must be an integer in [1, 2048], got ${maxInputs}`)
  }
  if (!(maxTokens > 0)) throw new TypeError(`OpenAiCompat: maxTokensPerRequest must be > 0, got ${maxTokens}`)
  const prices = config.prices ?? Budget.defaultPrices[config.model]
  const url = endpoint(config, "/embeddings")
  const headers = baseHeaders(config)
  const observe = limitLearner(config.learnLimits ?? true)
  const decode = decodeBody(EmbeddingResponseBody, "embeddings")
  const priced = (inputTokens: number) => (prices === undefined ? 0 : Budget.costOf(prices, { inputTokens, outputTokens: 0 }))

  return (
    texts: ReadonlyArray<string>,
    // No checkpoint: groups rejected as a whole run again as a second batch, whose indexes would clash with the first's.
    options: Omit<Batch.Options<ReadonlyArray<number>, ReadonlyArray<Embedding>, TaskError.TaskError>, "estimate" | "settle" | "checkpoint"> = {}
  ): Effect.Effect<
    { readonly results: Array<TaskResult.TaskResult<Embedding, TaskError.TaskError>>, readonly reports: Array<BatchReport> },
    never,
    HttpClient.HttpClient
  > => {
    const estimateOf = (group: ReadonlyArray<number>) => group.reduce((sum, i) => sum + estimateTokens(texts[i]!), 0)
    const task = (group: ReadonlyArray<number>, index: number) => {
      const input = group.map((i) => texts[i]!)
      const body = {
        model: config.model,
        ...config.defaults,
        input,
        ...(config.dimensions === undefined ? {} : { dimensions: config.dimensions })
      }
      const key = ResultCache.key(body).slice(0, 32)
      return post(url, body, { ...headers, "idempotency-key": `${key}-${index}` }, observe).pipe(
        Effect.flatMap(decode),
        Effect.flatMap((response) => {
          if (response.data.length !== group.length) {
            return Effect.fail(new TaskError.Permanent({
              message: `embeddings response has ${response.data.length} vectors for ${group.length} inputs`
            }))
          }
          const estimated = Math.max(1, estimateOf(group))
          const vectors: Array<Embedding> = new Array(group.length)
          for (const datum of response.data) {
            vectors[datum.index] = {
              vector: datum.embedding,
              tokens: (response.usage.prompt_tokens * estimateTokens(input[datum.index] ?? "")) / estimated,
              groupSize: group.length
            }
          }
          return Effect.succeed(vectors)
        })
      )
    }
    const batchOptions: Batch.Options<ReadonlyArray<number>, ReadonlyArray<Embedding>, TaskError.TaskError> = {
      ...options,
      estimate: (group) => {
        const tokens = estimateOf(group)
        return { tokens, usd: priced(tokens) }
      },
      settle: (vectors) => {
        const tokens = vectors.reduce((sum, vector) => sum + vector.tokens, 0)
        return { tokens, usd: priced(tokens) }
      }
    }
    return Effect.gen(function*() {
      const results: Array<TaskResult.TaskResult<Embedding, TaskError.TaskError>> = new Array(texts.length)
      /** Spreads group outcomes over their texts; the texts of groups rejected as a whole, to try alone. */
      const spread = (
        outcomes: ReadonlyArray<TaskResult.TaskResult<ReadonlyArray<Embedding>, TaskError.TaskError>>,
        groups: ReadonlyArray<ReadonlyArray<number>>
      ) => {
        const rejected: Array<number> = []
        for (const outcome of outcomes) {
          const group = groups[outcome.index]!
          group.forEach((textIndex, position) => {
            if (outcome._tag === "Succeeded") {
              const vector = outcome.value[position]!
              results[textIndex] = TaskResult.succeeded(textIndex, vector, outcome.attempts, outcome.durationMs, outcome.source)
            } else if (outcome._tag === "Failed" && outcome.errorClass === "Permanent" && group.length > 1) {
              rejected.push(textIndex)
            } else if (outcome._tag === "Failed") {
              const { attempts, durationMs, error, errorClass } = outcome
              results[textIndex] = TaskResult.failed(textIndex, error, errorClass, attempts, durationMs)
            } else {
              results[textIndex] = TaskResult.skipped(textIndex, outcome.reason, outcome.attempts)
            }
          })
        }
        return rejected
      }
      const groups = groupTexts(texts, maxInputs, maxTokens)
      const first = yield* Batch.run(groups, task, batchOptions)
      const reports = [first.report]
      const rejected = spread(first.results, groups)
      if (rejected.length > 0) {
        // One bad input rejects its whole request: find it by sending the texts of rejected groups one by one.
        const singles = rejected.map((i) => [i])
        const second = yield* Batch.run(singles, task, batchOptions)
        reports.push(second.report)
        spread(second.results, singles)
      }
      return { results, reports }
    })
  }
}
