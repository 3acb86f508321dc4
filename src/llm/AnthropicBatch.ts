/**
 * Anthropic's Message Batches as a `BatchProvider`, over `@effect/platform`'s
 * `HttpClient`: `POST /messages/batches` with the requests inline (so
 * `upload` only holds a shard's lines until `create`), `GET
 * /messages/batches/:id`, its `results_url`, `POST …/:id/cancel`, and
 * `GET /messages/batches` (newest first) for `find`. `chat(config)` makes
 * `BatchApi`'s options for chat inputs: the same prompts and chat requests
 * as `OpenAiCompat.chat` (system messages go to `system`), answered as the
 * same `ChatCompletion`s, priced at the batch discount.
 *
 * Anthropic keeps no metadata on a batch, so a shard caught between
 * creating its batch and recording the id is matched by time and size: the
 * batch created in the window with as many requests, not claimed by another
 * shard of the run. A wrong match cannot mix answers up (lines are named by
 * run, round and item); its lines would be read as missing and go again.
 *
 * What it does not promise: 429, 529, 5xx and dropped connections are
 * retried (1 s, doubling, 5 times); `find` looks back through at most
 * 1 000 batches.
 *
 * @since 0.1.0
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as Budget from "../Budget.js"
import * as TaskError from "../TaskError.js"
import type * as BatchApi from "./BatchApi.js"
import * as BatchProvider from "./BatchProvider.js"
import type { ChatInput } from "./ChatRequest.js"
import { decoder, outcomesOf, sender, toleratingEnded } from "./internal/batchHttp.js"
import { anthropicLine } from "./internal/batchOutcomes.js"
import type * as OpenAiCompat from "./OpenAiCompat.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Config {
  /** Base URL of the API. Default `https://api.anthropic.com/v1`. */
  readonly baseUrl?: string | undefined
  readonly apiKey?: Redacted.Redacted | undefined
  /** Sent as `anthropic-version`. Default `2023-06-01`. */
  readonly version?: string | undefined
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** Requests per batch. Default 100 000. */
  readonly maxRequests?: number | undefined
  /** Bytes per batch. Default 256 MB. */
  readonly maxBytes?: number | undefined
}

const MessageBatch = Schema.Struct({
  id: Schema.String,
  processing_status: Schema.String,
  created_at: Schema.optional(Schema.NullOr(Schema.String)),
  cancel_initiated_at: Schema.optional(Schema.NullOr(Schema.String)),
  results_url: Schema.optional(Schema.NullOr(Schema.String)),
  request_counts: Schema.Struct({
    processing: Schema.Number,
    succeeded: Schema.Number,
    errored: Schema.Number,
    canceled: Schema.Number,
    expired: Schema.Number
  })
})

const BatchList = Schema.Struct({ data: Schema.Array(MessageBatch), has_more: Schema.optional(Schema.Boolean) })

/**
 * The provider, on the `HttpClient` in context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (config: Config = {}): Effect.Effect<BatchProvider.Service, never, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    const baseUrl = config.baseUrl ?? "https://api.anthropic.com/v1"
    if (!/^https?:\/\/\S+$/.test(baseUrl)) {
      return yield* Effect.dieMessage(`AnthropicBatch: baseUrl must be an http(s) URL, got ${JSON.stringify(baseUrl)}`)
    }
    const client = yield* HttpClient.HttpClient
    const base = `${baseUrl.replace(/\/+$/, "")}/messages/batches`
    const headers: Record<string, string> = {
      "anthropic-version": config.version ?? "2023-06-01",
      ...(config.apiKey === undefined ? {} : { "x-api-key": Redacted.value(config.apiKey) }),
      ...config.headers
    }

    const send = sender(client, headers)

    // Lines are sent with `create`: `upload` keeps them here until then.
    const held = new Map<string, ReadonlyArray<string>>()
    let nextHeld = 0

    const upload = (_name: string, lines: ReadonlyArray<string>) =>
      Effect.sync(() => {
        const ref = `inline-${++nextHeld}`
        held.set(ref, lines)
        return ref
      })

    const create = (upload: string, _endpoint: string, _tags: BatchProvider.Tags) =>
      Effect.gen(function*() {
        const lines = held.get(upload)
        if (lines === undefined) {
          return yield* new BatchProvider.BatchApiError({ operation: "create", detail: `no lines held under ${upload} (uploaded by another process?)` })
        }
        // The lines are JSON already: joined, not parsed and serialised again.
        const body = `{"requests":[${lines.join(",")}]}`
        const batch = yield* send("create", HttpClientRequest.post(base).pipe(HttpClientRequest.bodyText(body, "application/json"))).pipe(
          Effect.flatMap(decoder(MessageBatch, "create"))
        )
        held.delete(upload)
        return batch.id
      })

    const statusOf = (batch: typeof MessageBatch.Type): BatchProvider.Status => {
      const c = batch.request_counts
      const ended = batch.processing_status === "ended"
      return {
        id: batch.id,
        state: batch.processing_status,
        ended: !ended ? undefined : batch.cancel_initiated_at != null ? "cancelled" : c.expired > 0 ? "expired" : "completed",
        counts: { total: c.processing + c.succeeded + c.errored + c.canceled + c.expired, completed: c.succeeded, failed: c.errored },
        failures: [],
        results: { output: batch.results_url ?? `${base}/${encodeURIComponent(batch.id)}/results`, errors: null }
      }
    }

    const poll = (id: string) =>
      send("poll", HttpClientRequest.get(`${base}/${encodeURIComponent(id)}`)).pipe(
        Effect.flatMap(decoder(MessageBatch, "poll")),
        Effect.map(statusOf)
      )

    const results = (status: BatchProvider.Status) =>
      Effect.map(
        send("results", HttpClientRequest.get(status.results.output ?? `${base}/${encodeURIComponent(status.id)}/results`)),
        (text) => outcomesOf(text, anthropicLine)
      )

    const find = ({ exclude, requests, since, until }: BatchProvider.FindQuery) =>
      Effect.gen(function*() {
        let after: string | undefined
        for (let page = 0; page < 10; page++) {
          const url = `${base}?limit=100${after === undefined ? "" : `&after_id=${encodeURIComponent(after)}`}`
          const list = yield* send("find", HttpClientRequest.get(url)).pipe(Effect.flatMap(decoder(BatchList, "find")))
          for (const batch of list.data) {
            const created = batch.created_at == null ? Number.NaN : Date.parse(batch.created_at)
            const size = statusOf(batch).counts.total
            if (created >= since && created <= until && size === requests && !exclude.has(batch.id)) return Option.some(batch.id)
          }
          const last = list.data.at(-1)
          const lastCreated = last?.created_at == null ? Number.NaN : Date.parse(last.created_at)
          if (last === undefined || list.has_more !== true || lastCreated < since) break
          after = last.id
        }
        return Option.none<string>()
      })

    const cancel = (id: string) =>
      toleratingEnded(send("cancel", HttpClientRequest.post(`${base}/${encodeURIComponent(id)}/cancel`)))

    return {
      name: "anthropic",
      inline: true,
      limits: { maxRequests: config.maxRequests ?? 100_000, maxBytes: config.maxBytes ?? 256 * 1024 * 1024 },
      line: (customId, _endpoint, body) => JSON.stringify({ custom_id: customId, params: body }),
      upload,
      create,
      find,
      poll,
      results,
      cancel
    } satisfies BatchProvider.Service
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (config: Config = {}): Layer.Layer<BatchProvider.BatchProvider, never, HttpClient.HttpClient> =>
  Layer.effect(BatchProvider.BatchProvider, make(config))

// ---------------------------------------------------------------------------
// chat
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface ChatConfig {
  readonly model: string
  /** Request fields sent with every request unless the item sets them (`temperature`, ...). */
  readonly defaults?: Readonly<Record<string, unknown>> | undefined
  /** `max_tokens` when a request sets none (Anthropic requires one). Default 1 024. */
  readonly maxTokens?: number | undefined
  /** Live prices; default `Budget.defaultPrices[model]`, else none (cost 0). */
  readonly prices?: Budget.Prices | undefined
  /** The batch price as a share of the live one. Default: the prices' `batchDiscount`, else 0.5. */
  readonly discount?: number | undefined
}

const Message = Schema.Struct({
  id: Schema.String,
  model: Schema.String,
  content: Schema.Array(Schema.Struct({ type: Schema.String, text: Schema.optional(Schema.String) })),
  stop_reason: Schema.optional(Schema.NullOr(Schema.String)),
  usage: Schema.Struct({
    input_tokens: Schema.Number,
    output_tokens: Schema.Number,
    cache_read_input_tokens: Schema.optional(Schema.NullOr(Schema.Number))
  })
})

/**
 * `BatchApi` options for chat inputs against Anthropic's Messages API.
 *
 * @since 0.1.0
 * @category constructors
 */
export const chat = (config: ChatConfig): BatchApi.Spec<ChatInput, OpenAiCompat.ChatCompletion> => {
  const prices = config.prices ?? Budget.defaultPrices[config.model]
  const discount = config.discount ?? prices?.batchDiscount ?? 0.5
  if (!(discount > 0 && discount <= 1)) throw new TypeError(`AnthropicBatch.chat: discount must be in (0, 1], got ${discount}`)
  const maxTokens = config.maxTokens ?? 1024
  const decodeMessage = Schema.decodeUnknown(Message)
  const paramsOf = (input: ChatInput): Record<string, unknown> => {
    const request = typeof input === "string" ? { messages: [{ role: "user", content: input }] } : input
    const { messages, ...rest } = request
    const system = messages.filter((m) => m.role === "system").map((m) => m.content).join("\n\n")
    return {
      model: config.model,
      max_tokens: maxTokens,
      ...config.defaults,
      ...rest,
      ...(system === "" ? {} : { system }),
      messages: messages.filter((m) => m.role !== "system")
    }
  }
  /** About 4 characters a token for the prompt, and `max_tokens` for the answer. */
  const tokensOf = (params: Record<string, unknown>) => {
    const input = Math.ceil((JSON.stringify(params["messages"]).length + String(params["system"] ?? "").length) / 4)
    const output = typeof params["max_tokens"] === "number" ? params["max_tokens"] : maxTokens
    return { input, output, total: input + output }
  }
  return {
    endpoint: "/v1/messages",
    toRequest: (input) => {
      const body = paramsOf(input)
      return { model: String(body["model"]), body }
    },
    decode: (body) =>
      decodeMessage(body).pipe(
        Effect.mapError((error) => new TaskError.Permanent({ message: `unexpected message: ${error.message.split("\n")[0]}` })),
        Effect.map((message): OpenAiCompat.ChatCompletion => {
          const usage = {
            promptTokens: message.usage.input_tokens,
            cachedPromptTokens: message.usage.cache_read_input_tokens ?? 0,
            completionTokens: message.usage.output_tokens,
            totalTokens: message.usage.input_tokens + message.usage.output_tokens
          }
          const live = prices === undefined ? 0 : Budget.costOf(prices, {
            inputTokens: usage.promptTokens,
            cachedInputTokens: usage.cachedPromptTokens,
            outputTokens: usage.completionTokens
          })
          return {
            id: message.id,
            model: message.model,
            content: message.content.map((part) => part.text ?? "").join(""),
            finishReason: message.stop_reason ?? null,
            usage,
            cost: live * discount
          }
        })
      ),
    tokens: (input) => tokensOf(paramsOf(input)).total,
    estimate: (input) => {
      if (prices === undefined) return 0
      const { input: inputTokens, output } = tokensOf(paramsOf(input))
      return Budget.costOf(prices, { inputTokens, outputTokens: output }) * discount
    },
    cost: (completion) => ({ batch: completion.cost, live: completion.cost / discount })
  }
}
