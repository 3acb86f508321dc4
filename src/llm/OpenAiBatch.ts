/**
 * OpenAI's Batch API as a `BatchProvider`, over `@effect/platform`'s
 * `HttpClient`: `POST /files` (`purpose=batch`, then waits until the file is
 * `processed`, since a batch created before that gets 400 "Cannot find
 * file"), `POST /batches` (`completion_window: "24h"`, the shard's tags as
 * `metadata`), `GET /batches/:id`, `GET /batches` (newest first, to find a
 * batch by its metadata), `GET /files/:id/content` for the output and error
 * files, `POST /batches/:id/cancel`. Works against the simulator and any
 * OpenAI-compatible server that has these endpoints.
 *
 * A `completed` batch whose `output_file_id` is still `null` while it says
 * lines completed is read as not ended yet (it happens, for a moment); a
 * `completed` batch with only an error file is every line failed, not an
 * empty success.
 *
 * What it does not promise: 429, 5xx and dropped connections are retried
 * (1 s, doubling, 5 times); other answers fail with the status and the
 * provider's message. `find` pages back through at most 1 000 batches.
 *
 * @since 0.1.0
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as BatchProvider from "./BatchProvider.js"
import { decoder, outcomesOf, sender, toleratingEnded } from "./internal/batchHttp.js"
import { openAiLine } from "./internal/batchOutcomes.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Config {
  /** Base URL of the API, e.g. `https://api.openai.com/v1`. */
  readonly baseUrl: string
  readonly apiKey?: Redacted.Redacted | undefined
  readonly headers?: Readonly<Record<string, string>> | undefined
  /** Lines per batch. Default 50 000. */
  readonly maxRequests?: number | undefined
  /** Bytes per input file. Default 200 MB. */
  readonly maxBytes?: number | undefined
  /** How often to ask whether an uploaded file is processed. Default every 500 ms, 120 times. */
  readonly fileReady?: Schedule.Schedule<unknown> | undefined
}

const FileObject = Schema.Struct({ id: Schema.String, status: Schema.optional(Schema.String) })

const BatchObject = Schema.Struct({
  id: Schema.String,
  status: Schema.String,
  created_at: Schema.optional(Schema.Number),
  output_file_id: Schema.optional(Schema.NullOr(Schema.String)),
  error_file_id: Schema.optional(Schema.NullOr(Schema.String)),
  request_counts: Schema.optional(Schema.NullOr(Schema.Struct({ total: Schema.Number, completed: Schema.Number, failed: Schema.Number }))),
  errors: Schema.optional(Schema.NullOr(Schema.Struct({
    data: Schema.optional(Schema.Array(Schema.Struct({
      code: Schema.optional(Schema.NullOr(Schema.String)),
      message: Schema.optional(Schema.NullOr(Schema.String)),
      line: Schema.optional(Schema.NullOr(Schema.Number))
    })))
  }))),
  metadata: Schema.optional(Schema.NullOr(Schema.Record({ key: Schema.String, value: Schema.String })))
})

const BatchList = Schema.Struct({ data: Schema.Array(BatchObject), has_more: Schema.optional(Schema.Boolean) })

const endedStates = new Set(["completed", "failed", "expired", "cancelled"])

/**
 * The provider, on the `HttpClient` in context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (config: Config): Effect.Effect<BatchProvider.Service, never, HttpClient.HttpClient> =>
  Effect.gen(function*() {
    if (!/^https?:\/\/\S+$/.test(config.baseUrl)) {
      return yield* Effect.dieMessage(`OpenAiBatch: baseUrl must be an http(s) URL, got ${JSON.stringify(config.baseUrl)}`)
    }
    const client = yield* HttpClient.HttpClient
    const base = config.baseUrl.replace(/\/+$/, "")
    const headers: Record<string, string> = {
      ...(config.apiKey === undefined ? {} : { authorization: `Bearer ${Redacted.value(config.apiKey)}` }),
      ...config.headers
    }
    const fileReady = config.fileReady ?? Schedule.spaced("500 millis").pipe(Schedule.intersect(Schedule.recurs(120)))

    const send = sender(client, headers)
    const decodeFile = decoder(FileObject, "upload")
    const decodeBatch = (operation: "create" | "poll") => decoder(BatchObject, operation)
    const decodeList = decoder(BatchList, "find")

    const upload = (name: string, lines: ReadonlyArray<string>) =>
      Effect.gen(function*() {
        const form = new FormData()
        form.append("purpose", "batch")
        form.append("file", new Blob([lines.join("\n") + "\n"], { type: "application/jsonl" }), name)
        // Encoded here, not handed to the client as FormData: the undici client (NodeHttpClient.layerUndici) hangs
        // on a FormData of Node's own undici, a different copy of the class than the one it checks for.
        const encoded = new Request("http://localhost/", { method: "POST", body: form })
        const bytes = new Uint8Array(yield* Effect.promise(() => encoded.arrayBuffer()))
        const contentType = encoded.headers.get("content-type") ?? "multipart/form-data"
        const file = yield* send("upload", HttpClientRequest.post(`${base}/files`).pipe(HttpClientRequest.bodyUint8Array(bytes, contentType)))
          .pipe(Effect.flatMap(decodeFile))
        if (file.status === undefined || file.status === "processed") return file.id
        // Created right after upload, a batch can get 400 "Cannot find file": wait until the file is processed.
        const check = send("upload", HttpClientRequest.get(`${base}/files/${encodeURIComponent(file.id)}`)).pipe(Effect.flatMap(decodeFile))
        const driver = yield* Schedule.driver(fileReady)
        let processed = file
        while (processed.status !== "processed" && processed.status !== "error") {
          if (Option.isNone(yield* Effect.option(driver.next(processed)))) break
          processed = yield* check
        }
        if (processed.status !== "processed") {
          return yield* new BatchProvider.BatchApiError({ operation: "upload", detail: `file ${file.id} is ${processed.status ?? "not processed"}` })
        }
        return file.id
      })

    const statusOf = (batch: typeof BatchObject.Type): BatchProvider.Status => {
      const counts = batch.request_counts ?? { total: 0, completed: 0, failed: 0 }
      const output = batch.output_file_id ?? null
      const errors = batch.error_file_id ?? null
      // A completed batch whose output file id is not there yet though lines completed: read it again later.
      const readable = !(batch.status === "completed" && output === null && counts.completed > 0)
      return {
        id: batch.id,
        state: batch.status,
        ended: endedStates.has(batch.status) && readable ? batch.status as BatchProvider.Status["ended"] : undefined,
        counts,
        failures: (batch.errors?.data ?? []).map((e) => ({
          code: e.code ?? "unknown",
          message: e.message ?? "",
          line: e.line ?? undefined
        })),
        results: { output, errors }
      }
    }

    const create = (upload: string, endpoint: string, tags: BatchProvider.Tags) =>
      send(
        "create",
        HttpClientRequest.post(`${base}/batches`).pipe(
          HttpClientRequest.bodyUnsafeJson({ input_file_id: upload, endpoint, completion_window: "24h", metadata: tags })
        )
      ).pipe(Effect.flatMap(decodeBatch("create")), Effect.map((batch) => batch.id))

    const find = ({ since, tags }: BatchProvider.FindQuery) =>
      Effect.gen(function*() {
        let after: string | undefined
        // Creation times are whole seconds: a batch created in the same second as `since` counts.
        const sinceSeconds = Math.floor(since / 1000) - 1
        for (let page = 0; page < 10; page++) {
          const url = `${base}/batches?limit=100${after === undefined ? "" : `&after=${encodeURIComponent(after)}`}`
          const list = yield* send("find", HttpClientRequest.get(url)).pipe(Effect.flatMap(decodeList))
          for (const batch of list.data) {
            const metadata = batch.metadata ?? {}
            if (Object.entries(tags).every(([k, v]) => metadata[k] === v)) return Option.some(batch.id)
          }
          const last = list.data.at(-1)
          if (last === undefined || list.has_more !== true || (last.created_at !== undefined && last.created_at < sinceSeconds)) break
          after = last.id
        }
        return Option.none<string>()
      })

    const poll = (id: string) =>
      send("poll", HttpClientRequest.get(`${base}/batches/${encodeURIComponent(id)}`)).pipe(
        Effect.flatMap(decodeBatch("poll")),
        Effect.map(statusOf)
      )

    const lines = (fileId: string | null) =>
      fileId === null
        ? Effect.succeed([])
        : Effect.map(
            send("results", HttpClientRequest.get(`${base}/files/${encodeURIComponent(fileId)}/content`)),
            (text) => outcomesOf(text, openAiLine)
          )

    const results = (status: BatchProvider.Status) =>
      Effect.map(Effect.all([lines(status.results.output), lines(status.results.errors)]), ([output, errors]) => [...output, ...errors])

    const cancel = (id: string) =>
      toleratingEnded(send("cancel", HttpClientRequest.post(`${base}/batches/${encodeURIComponent(id)}/cancel`)))

    return {
      name: "openai",
      inline: false,
      limits: { maxRequests: config.maxRequests ?? 50_000, maxBytes: config.maxBytes ?? 200 * 1024 * 1024 },
      line: (customId, endpoint, body) => JSON.stringify({ custom_id: customId, method: "POST", url: endpoint, body }),
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
export const layer = (config: Config): Layer.Layer<BatchProvider.BatchProvider, never, HttpClient.HttpClient> =>
  Layer.effect(BatchProvider.BatchProvider, make(config))
