/**
 * The simulator's batch API surfaces (issue #13). OpenAI's: `POST /v1/files`,
 * `GET /v1/files/:id`, `GET /v1/files/:id/content`, `DELETE /v1/files/:id`,
 * `POST /v1/batches`, `GET /v1/batches/:id`, `GET /v1/batches` (newest first,
 * `after` and `limit`), `POST /v1/batches/:id/cancel`.
 *
 * A batch's life is a function of the clock, read whenever the batch is:
 * `validating` for `validateMs`, then `failed` (a validation error, or the
 * model's enqueued-token limit, which OpenAI too reports only after the
 * batch was created) or `in_progress`, where lines run in file order at
 * `linesPerSecond`; `finalizing` for `finalizeMs` once the last has run;
 * `completed`. A batch still running at `expires_at` (created + the window)
 * is `expired`; one cancelled is `cancelling` for `cancelMs`, then
 * `cancelled`. Expired and cancelled batches keep the lines that ran, in
 * their output and error files, and the rest are error lines
 * (`batch_expired`, `batch_cancelled`), as OpenAI's are. A file is
 * `uploaded` for `fileProcessingMs` before it is `processed`; a batch
 * created on it before then gets 400 "Cannot find file".
 *
 * A line is answered as the live endpoint would answer its body (same
 * answer, same usage), without rate limits or latency: a body the live
 * endpoint refuses, or a flagged prompt, is a 400 in the error file;
 * `lineFailureRate` draws 500s. Output lines are shuffled. A completed
 * batch's `output_file_id` reads `null` for its first `nullOutputPolls`
 * reads. Counters say how many batches were created and how many times
 * each `custom_id` was billed (answered with a 200).
 *
 * Anthropic's Message Batches (`POST /v1/messages/batches` with the requests
 * inline, `GET …/:id`, `GET …` newest first with `after_id`, `POST
 * …/:id/cancel`, `GET …/:id/results`) run on the same state machine: counts
 * only once ended, each line `succeeded`, `errored`, `canceled` or
 * `expired`, answers written as Messages.
 *
 * What it does not promise: a batch ends only when something reads it (the
 * counters move then); Anthropic batches have no validation failures nor
 * queue limit; files are never deleted by retention.
 */
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as model from "./simulatorModel.js"

/** Knobs of the batch surface; every one has a default. */
export interface Options {
  /** A batch's time in `validating`, in ms. Default 1 000. */
  readonly validateMs?: number | undefined
  /** Lines run per second while a batch is `in_progress`. Default 100. */
  readonly linesPerSecond?: number | undefined
  /** A batch's time in `finalizing`, in ms. Default 1 000. */
  readonly finalizeMs?: number | undefined
  /** A batch's time in `cancelling`, in ms. Default 2 000. */
  readonly cancelMs?: number | undefined
  /** How long a batch may run before it expires, in ms. Default 24 h. */
  readonly windowMs?: number | undefined
  /** A file's time in `uploaded` before it is `processed`, in ms. Default 200. */
  readonly fileProcessingMs?: number | undefined
  /** Lines a batch may hold. Default 50 000. */
  readonly maxRequests?: number | undefined
  /** Bytes a file may hold. Default 200 MB. */
  readonly maxBytes?: number | undefined
  /** Prompt tokens of batches not yet ended, per model; a batch over it fails with `token_limit_exceeded`. Default unlimited. */
  readonly enqueuedTokens?: number | undefined
  /** Probability that a line that runs fails with a 500 in the error file. Default 0. */
  readonly lineFailureRate?: number | undefined
  /** Reads of a completed batch that show `output_file_id: null` before the id. Default 0. */
  readonly nullOutputPolls?: number | undefined
}

/** Counters of the batch surface since the simulator started or was reset. */
export interface Metrics {
  /** Files uploaded. */
  readonly uploads: number
  readonly created: number
  /** Lines answered with a 200 (billed), all batches. */
  readonly linesBilled: number
  /** `custom_id`s billed more than once (in different batches), with their count. */
  readonly billedTwice: Readonly<Record<string, number>>
}

/** How a line's body would be answered live: a string is why the body is refused. */
export type Answer = (url: string, body: unknown) => {
  readonly promptTokens: number
  readonly completionTokens: number
  readonly flagged: boolean
  readonly body: (created: number) => unknown
} | string

interface Resolved {
  readonly validateMs: number
  readonly linesPerSecond: number
  readonly finalizeMs: number
  readonly cancelMs: number
  readonly windowMs: number
  readonly fileProcessingMs: number
  readonly maxRequests: number
  readonly maxBytes: number
  readonly enqueuedTokens: number
  readonly lineFailureRate: number
  readonly nullOutputPolls: number
}

/** Options with their defaults, or the first one that is wrong. */
export const resolve = (options: Options | undefined): Resolved | string => {
  const o = options ?? {}
  const fields: ReadonlyArray<readonly [keyof Options, number, (v: number) => boolean, string]> = [
    ["validateMs", 1_000, (v) => Number.isFinite(v) && v >= 0, "a finite number ≥ 0"],
    ["linesPerSecond", 100, (v) => Number.isFinite(v) && v > 0, "a finite number > 0"],
    ["finalizeMs", 1_000, (v) => Number.isFinite(v) && v >= 0, "a finite number ≥ 0"],
    ["cancelMs", 2_000, (v) => Number.isFinite(v) && v >= 0, "a finite number ≥ 0"],
    ["windowMs", 24 * 3_600_000, (v) => Number.isFinite(v) && v > 0, "a finite number > 0"],
    ["fileProcessingMs", 200, (v) => Number.isFinite(v) && v >= 0, "a finite number ≥ 0"],
    ["maxRequests", 50_000, (v) => Number.isInteger(v) && v >= 1, "an integer ≥ 1"],
    ["maxBytes", 200 * 1024 * 1024, (v) => Number.isInteger(v) && v >= 1, "an integer ≥ 1"],
    ["enqueuedTokens", Infinity, (v) => v > 0, "a number > 0 or Infinity"],
    ["lineFailureRate", 0, (v) => v >= 0 && v <= 1, "between 0 and 1"],
    ["nullOutputPolls", 0, (v) => Number.isInteger(v) && v >= 0, "an integer ≥ 0"]
  ]
  const resolved: Record<string, number> = {}
  for (const [name, fallback, ok, expected] of fields) {
    const value = o[name] ?? fallback
    if (typeof value !== "number" || !ok(value)) return `batches.${name} must be ${expected}, got ${String(value)}`
    resolved[name] = value
  }
  return resolved as unknown as Resolved
}

// ---------------------------------------------------------------------------
// state
// ---------------------------------------------------------------------------

interface StoredFile {
  readonly id: string
  readonly filename: string
  readonly purpose: string
  readonly content: string
  readonly bytes: number
  readonly createdAt: number
  deleted: boolean
}

interface Line {
  readonly customId: string
  readonly body: unknown
}

interface ValidationError {
  readonly code: string
  readonly message: string
  readonly line?: number | undefined
}

type EndState = "completed" | "expired" | "cancelled" | "failed"

/** What became of one line, whichever provider's format it is then written in. */
type Fate =
  | { readonly kind: "answered", readonly body: unknown }
  | { readonly kind: "refused", readonly message: string, readonly code: string }
  | { readonly kind: "failed" }
  | { readonly kind: "notRun", readonly why: "cancelled" | "expired" }

const serverErrorMessage = "The server had an error while processing your request."

type AnthropicResultType = "succeeded" | "errored" | "canceled" | "expired"

/** A line's `result` in Anthropic's results: the answer as a Message (from the chat completion the simulator makes). */
const anthropicResult = (fate: Fate): { readonly type: AnthropicResultType } & Record<string, unknown> => {
  switch (fate.kind) {
    case "answered":
      return { type: "succeeded", message: anthropicMessage(fate.body) }
    case "refused":
      return { type: "errored", error: { type: "error", error: { type: "invalid_request_error", message: fate.message } } }
    case "failed":
      return { type: "errored", error: { type: "error", error: { type: "api_error", message: serverErrorMessage } } }
    case "notRun":
      return { type: fate.why === "cancelled" ? "canceled" : "expired" }
  }
}

/** A chat completion (the simulator's own) as an Anthropic Message. */
const anthropicMessage = (completion: unknown) => {
  const c = completion as {
    id: string
    model: string
    choices: ReadonlyArray<{ message: { content: string }, finish_reason: string }>
    usage: { prompt_tokens: number, completion_tokens: number }
  }
  return {
    id: c.id.replace("chatcmpl-", "msg_"),
    type: "message",
    role: "assistant",
    model: c.model,
    content: [{ type: "text", text: c.choices[0]!.message.content }],
    stop_reason: c.choices[0]!.finish_reason === "length" ? "max_tokens" : "end_turn",
    stop_sequence: null,
    usage: { input_tokens: c.usage.prompt_tokens, output_tokens: c.usage.completion_tokens }
  }
}

interface SimBatch {
  readonly flavour: "openai" | "anthropic"
  readonly id: string
  readonly number: number
  readonly inputFileId: string
  readonly endpoint: string
  readonly metadata: Record<string, string> | null
  readonly createdAt: number
  readonly lines: ReadonlyArray<Line>
  readonly model: string | undefined
  /** Prompt tokens it holds in its model's queue until it ends. */
  readonly queuedTokens: number
  readonly failure: ValidationError | undefined
  cancelledAt: number | undefined
  ended: { readonly state: EndState, readonly at: number, readonly ran: number } | undefined
  outputFileId: string | null
  errorFileId: string | null
  usage: { input_tokens: number, output_tokens: number, total_tokens: number }
  counts: { total: number, completed: number, failed: number }
  readonly anthropicCounts: Record<AnthropicResultType, number>
  nullPollsLeft: number
}

const errorBody = (message: string, code: string | null, param: string | null = null) => ({
  error: { message, type: "invalid_request_error", param, code }
})

const json = (body: unknown, status = 200) => HttpServerResponse.unsafeJson(body, { status })

const endpoints = new Set(["/v1/chat/completions", "/v1/embeddings"])

/** The batch surface's state and routes; `authorized` guards every route. */
export const make = (deps: {
  readonly options: () => Resolved
  readonly now: () => number
  readonly seed: () => number
  readonly answer: Answer
  readonly authorized: (request: HttpServerRequest.HttpServerRequest) => boolean
}) => {
  const { answer, now } = deps
  let files = new Map<string, StoredFile>()
  let batches = new Map<string, SimBatch>()
  let order: Array<SimBatch> = []
  let nextFile = 0
  let nextBatch = 0
  let nextLine = 0
  let uploads = 0
  let created = 0
  let linesBilled = 0
  let billed = new Map<string, number>()

  const fileObject = (file: StoredFile) => ({
    id: file.id,
    object: "file",
    bytes: file.bytes,
    created_at: Math.floor(file.createdAt / 1000),
    filename: file.filename,
    purpose: file.purpose,
    status: now() - file.createdAt >= deps.options().fileProcessingMs ? "processed" : "uploaded"
  })

  const addFile = (filename: string, purpose: string, content: string): StoredFile => {
    const file: StoredFile = {
      id: `file-sim-${++nextFile}`,
      filename,
      purpose,
      content,
      bytes: Buffer.byteLength(content, "utf8"),
      createdAt: now(),
      deleted: false
    }
    files.set(file.id, file)
    return file
  }

  /** A batch created now, with nothing run yet. */
  const addBatch = (
    fields: Pick<SimBatch, "flavour" | "id" | "inputFileId" | "endpoint" | "metadata" | "lines" | "model" | "queuedTokens" | "failure" | "nullPollsLeft">
  ): SimBatch => {
    const batch: SimBatch = {
      ...fields,
      number: ++nextBatch,
      createdAt: now(),
      cancelledAt: undefined,
      ended: undefined,
      outputFileId: null,
      errorFileId: null,
      usage: { input_tokens: 0, output_tokens: 0, total_tokens: 0 },
      counts: { total: fields.lines.length, completed: 0, failed: 0 },
      anthropicCounts: { succeeded: 0, errored: 0, canceled: 0, expired: 0 }
    }
    batches.set(batch.id, batch)
    order.push(batch)
    created++
    return batch
  }

  /** Whether `batch` holds its model's queue at `at`: created, not failed, not yet ended. */
  const queuedAt = (batch: SimBatch, at: number) => batch.failure === undefined && endOf(batch).at > at

  /** Lines of `batch` run by `at`, had nothing stopped it: in file order, at `linesPerSecond` once validated. */
  const linesRanBy = (batch: SimBatch, at: number) => {
    const o = deps.options()
    const startedAt = batch.createdAt + o.validateMs
    return Math.min(batch.lines.length, Math.max(0, Math.floor((at - startedAt) * o.linesPerSecond / 1000)))
  }

  /** When and how `batch` ends, from the clock's point of view (whether or not it has been read since). */
  const endOf = (batch: SimBatch): { readonly state: EndState, readonly at: number, readonly ran: number } => {
    if (batch.ended !== undefined) return batch.ended
    const o = deps.options()
    const startedAt = batch.createdAt + o.validateMs
    if (batch.failure !== undefined) return { state: "failed", at: startedAt, ran: 0 }
    const allRanAt = startedAt + Math.ceil(batch.lines.length * 1000 / o.linesPerSecond)
    const expiresAt = batch.createdAt + o.windowMs
    const cancelled = batch.cancelledAt
    if (cancelled !== undefined && cancelled < Math.min(allRanAt, expiresAt)) {
      return { state: "cancelled", at: cancelled + o.cancelMs, ran: linesRanBy(batch, cancelled) }
    }
    if (allRanAt > expiresAt) return { state: "expired", at: expiresAt, ran: linesRanBy(batch, expiresAt) }
    return { state: "completed", at: allRanAt + o.finalizeMs, ran: batch.lines.length }
  }

  /** What became of each line of a batch that has just ended; billing counted here. */
  const fatesOf = (batch: SimBatch, end: { readonly state: EndState, readonly ran: number }, random: () => number) => {
    const failureRate = deps.options().lineFailureRate
    return batch.lines.map((line, i): Fate => {
      if (i >= end.ran) return { kind: "notRun", why: end.state === "cancelled" ? "cancelled" : "expired" }
      const answered = answer(batch.endpoint, line.body)
      if (typeof answered === "string") return { kind: "refused", message: answered, code: "invalid_request" }
      if (answered.flagged) {
        return { kind: "refused", message: "Invalid prompt: your prompt was flagged by the simulator (it contains INVALID).", code: "invalid_prompt" }
      }
      if (failureRate > 0 && random() < failureRate) return { kind: "failed" }
      batch.usage.input_tokens += answered.promptTokens
      batch.usage.output_tokens += answered.completionTokens
      batch.usage.total_tokens += answered.promptTokens + answered.completionTokens
      linesBilled++
      billed.set(line.customId, (billed.get(line.customId) ?? 0) + 1)
      return { kind: "answered", body: answered.body(Math.floor(now() / 1000)) }
    })
  }

  /** Writes the results of a batch that has just ended: OpenAI's output and error files, or Anthropic's results. */
  const finish = (batch: SimBatch, end: { readonly state: EndState, readonly at: number, readonly ran: number }) => {
    batch.ended = end
    if (end.state === "failed") return
    const random = model.mulberry32(model.hash32(deps.seed(), batch.id))
    const fates = fatesOf(batch, end, random)
    if (batch.flavour === "anthropic") {
      const lines = fates.map((fate, i) => JSON.stringify({ custom_id: batch.lines[i]!.customId, result: anthropicResult(fate) }))
      shuffle(lines, random)
      for (const fate of fates) batch.anthropicCounts[anthropicResult(fate).type]++
      batch.outputFileId = addFile(`${batch.id}_results.jsonl`, "batch_output", lines.join("\n") + "\n").id
      return
    }
    const output: Array<string> = []
    const errors: Array<string> = []
    fates.forEach((fate, i) => {
      const id = `batch_req_sim_${++nextLine}`
      const customId = batch.lines[i]!.customId
      const requestId = `req_sim_batch_${nextLine}`
      switch (fate.kind) {
        case "answered":
          const response = { status_code: 200, request_id: requestId, body: fate.body }
          output.push(JSON.stringify({ id, custom_id: customId, response, error: null }))
          return
        case "notRun": {
          const code = fate.why === "cancelled" ? "batch_cancelled" : "batch_expired"
          const message = fate.why === "cancelled"
            ? "This request was not executed because the batch was cancelled."
            : "This request could not be executed before the completion window expired."
          errors.push(JSON.stringify({ id, custom_id: customId, response: null, error: { code, message } }))
          return
        }
        case "refused":
        case "failed": {
          const response = fate.kind === "refused"
            ? { status_code: 400, request_id: requestId, body: errorBody(fate.message, fate.code) }
            : { status_code: 500, request_id: requestId, body: { error: { message: serverErrorMessage, type: "server_error", code: null } } }
          errors.push(JSON.stringify({ id, custom_id: customId, response, error: null }))
        }
      }
    })
    shuffle(output, random)
    shuffle(errors, random)
    batch.counts.completed = output.length
    batch.counts.failed = errors.length
    if (output.length > 0) batch.outputFileId = addFile(`${batch.id}_output.jsonl`, "batch_output", output.join("\n") + "\n").id
    if (errors.length > 0) batch.errorFileId = addFile(`${batch.id}_error.jsonl`, "batch_output", errors.join("\n") + "\n").id
  }

  const statusOf = (batch: SimBatch): string => {
    const end = endOf(batch)
    const at = now()
    if (at >= end.at) {
      if (batch.ended === undefined) finish(batch, end)
      return end.state
    }
    const o = deps.options()
    if (at < batch.createdAt + o.validateMs) return "validating"
    if (batch.cancelledAt !== undefined) return "cancelling"
    if (end.state === "completed" && at >= end.at - o.finalizeMs) return "finalizing"
    return "in_progress"
  }

  const batchObject = (batch: SimBatch) => {
    const status = statusOf(batch)
    const o = deps.options()
    const seconds = (ms: number | undefined) => ms === undefined ? null : Math.floor(ms / 1000)
    let outputFileId = batch.outputFileId
    if (status === "completed" && outputFileId !== null && batch.nullPollsLeft > 0) {
      batch.nullPollsLeft--
      outputFileId = null
    }
    const ran = status === "in_progress" || status === "finalizing" || status === "cancelling"
      ? linesRanBy(batch, now())
      : undefined
    return {
      id: batch.id,
      object: "batch",
      endpoint: batch.endpoint,
      model: batch.model ?? null,
      errors: batch.failure === undefined || status !== "failed"
        ? null
        : { object: "list", data: [{ code: batch.failure.code, message: batch.failure.message, param: null, line: batch.failure.line ?? null }] },
      input_file_id: batch.inputFileId,
      completion_window: "24h",
      status,
      output_file_id: outputFileId,
      error_file_id: batch.errorFileId,
      created_at: seconds(batch.createdAt),
      in_progress_at: status === "validating" || status === "failed" ? null : seconds(batch.createdAt + o.validateMs),
      expires_at: seconds(batch.createdAt + o.windowMs),
      cancelling_at: seconds(batch.cancelledAt),
      cancelled_at: status === "cancelled" ? seconds(batch.ended?.at) : null,
      expired_at: status === "expired" ? seconds(batch.ended?.at) : null,
      completed_at: status === "completed" ? seconds(batch.ended?.at) : null,
      failed_at: status === "failed" ? seconds(batch.ended?.at) : null,
      request_counts: ran === undefined ? batch.counts : { total: batch.lines.length, completed: ran, failed: 0 },
      usage: batch.usage,
      metadata: batch.metadata
    }
  }

  // --- validation -------------------------------------------------------------

  /** The lines of a file, or why the batch fails validation. */
  const parseLines = (content: string, endpoint: string): { lines: Array<Line>, model: string | undefined } | ValidationError => {
    const texts = content.split("\n")
    if (texts.at(-1) === "") texts.pop()
    if (texts.length === 0) return { code: "empty_file", message: "The input file is empty." }
    const o = deps.options()
    if (texts.length > o.maxRequests) {
      return { code: "too_many_tasks", message: `The input file has ${texts.length} requests; a batch may hold ${o.maxRequests}.` }
    }
    const seen = new Set<string>()
    const lines: Array<Line> = []
    let modelName: string | undefined
    for (let i = 0; i < texts.length; i++) {
      const line = i + 1
      let parsed: unknown
      try {
        parsed = JSON.parse(texts[i]!)
      } catch {
        return { code: "invalid_json_line", message: "This line is not parseable as valid JSON.", line }
      }
      const record = typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? parsed as Record<string, unknown> : undefined
      const customId = record?.["custom_id"]
      if (record === undefined || typeof customId !== "string" || customId === "") {
        return { code: "invalid_request", message: "Each line needs a custom_id, a method, a url and a body.", line }
      }
      if (seen.has(customId)) return { code: "duplicate_custom_id", message: `The custom_id ${customId} is used more than once.`, line }
      seen.add(customId)
      if (record["method"] !== "POST") return { code: "invalid_method", message: "The method must be POST.", line }
      if (record["url"] !== endpoint) {
        return { code: "url_mismatch", message: `The url ${String(record["url"])} does not match the batch's endpoint ${endpoint}.`, line }
      }
      const body = record["body"]
      const lineModel = typeof body === "object" && body !== null ? (body as Record<string, unknown>)["model"] : undefined
      if (typeof lineModel === "string") {
        if (modelName === undefined) modelName = lineModel
        else if (lineModel !== modelName) {
          return { code: "model_mismatch", message: `This line's model ${lineModel} differs from the file's ${modelName}.`, line }
        }
      }
      lines.push({ customId, body })
    }
    return { lines, model: modelName }
  }

  const promptTokensOf = (endpoint: string, lines: ReadonlyArray<Line>) => {
    let tokens = 0
    for (const line of lines) {
      const answered = answer(endpoint, line.body)
      if (typeof answered !== "string") tokens += answered.promptTokens
    }
    return tokens
  }

  // --- routes -----------------------------------------------------------------

  type Handler<E, R> = (request: HttpServerRequest.HttpServerRequest) => Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>
  const guarded = <E, R>(handler: Handler<E, R>) =>
    Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
      deps.authorized(request)
        ? handler(request)
        : Effect.succeed(json({ error: { message: "Incorrect API key provided.", type: "invalid_request_error", code: "invalid_api_key" } }, 401)))

  /** The id in `/v1/files/:id…`, `/v1/batches/:id…` or `/v1/messages/batches/:id…`. */
  const idInPath = Effect.map(HttpServerRequest.HttpServerRequest, (request) => {
    const match = /\/v1\/(?:messages\/)?(?:files|batches)\/([^/?]+)/.exec(request.url)
    return match === null ? "" : decodeURIComponent(match[1]!)
  })

  const liveFile = (id: string) => {
    const file = files.get(id)
    return file === undefined || file.deleted ? undefined : file
  }

  const noFile = (id: string) => json(errorBody(`No such File object: ${id}`, null, "id"), 404)
  const noBatch = (id: string) => json(errorBody(`No batch found with id '${id}'.`, null, "id"), 404)

  const uploadFile = guarded((request) =>
    Effect.gen(function*() {
      const contentType = request.headers["content-type"] ?? ""
      if (!contentType.startsWith("multipart/form-data")) {
        return json(errorBody("A file upload is multipart/form-data with a purpose and a file.", null), 400)
      }
      const buffer = yield* Effect.orElseSucceed(request.arrayBuffer, () => new ArrayBuffer(0))
      const form = yield* Effect.tryPromise(() => new Response(buffer, { headers: { "content-type": contentType } }).formData()).pipe(
        Effect.option
      )
      if (form._tag === "None") return json(errorBody("The multipart body could not be parsed.", null), 400)
      const purpose = form.value.get("purpose")
      const file = form.value.get("file")
      if (typeof purpose !== "string" || purpose === "") return json(errorBody("Missing purpose.", null, "purpose"), 400)
      if (file === null || typeof file === "string") return json(errorBody("Missing file.", null, "file"), 400)
      if (file.size > deps.options().maxBytes) return json(errorBody("File is too large.", null, "file"), 400)
      const content = yield* Effect.promise(() => file.text())
      uploads++
      return json(fileObject(addFile(file.name || "upload.jsonl", purpose, content)))
    }))

  const getFile = guarded(() =>
    Effect.map(idInPath, (id) => {
      const file = liveFile(id)
      return file === undefined ? noFile(id) : json(fileObject(file))
    }))

  const fileContent = guarded(() =>
    Effect.map(idInPath, (id) => {
      const file = liveFile(id)
      return file === undefined ? noFile(id) : HttpServerResponse.text(file.content, { contentType: "application/jsonl" })
    }))

  const deleteFile = guarded(() =>
    Effect.map(idInPath, (id) => {
      const file = liveFile(id)
      if (file === undefined) return noFile(id)
      file.deleted = true
      return json({ id, object: "file", deleted: true })
    }))

  const createBatch = guarded((request) =>
    Effect.gen(function*() {
      const body = yield* Effect.option(request.json)
      const record = body._tag === "Some" && typeof body.value === "object" && body.value !== null
        ? body.value as Record<string, unknown>
        : undefined
      if (record === undefined) return json(errorBody("The body must be a JSON object.", null), 400)
      const { completion_window, endpoint, input_file_id, metadata } = record
      if (typeof input_file_id !== "string") return json(errorBody("Missing input_file_id.", null, "input_file_id"), 400)
      if (typeof endpoint !== "string" || !endpoints.has(endpoint)) {
        return json(errorBody(`Unsupported endpoint ${JSON.stringify(endpoint)}.`, null, "endpoint"), 400)
      }
      if (completion_window !== "24h") return json(errorBody("completion_window must be 24h.", null, "completion_window"), 400)
      if (metadata !== undefined && metadata !== null) {
        const entries = typeof metadata === "object" && !Array.isArray(metadata) ? Object.entries(metadata) : undefined
        if (
          entries === undefined || entries.length > 16 ||
          entries.some(([k, v]) => k.length > 64 || typeof v !== "string" || v.length > 512)
        ) {
          return json(errorBody("metadata holds at most 16 string pairs (keys ≤ 64, values ≤ 512 characters).", null, "metadata"), 400)
        }
      }
      const file = liveFile(input_file_id)
      if (file === undefined || now() - file.createdAt < deps.options().fileProcessingMs) {
        return json(errorBody(`Cannot find file ${input_file_id}, or project does not have access to it.`, null, "input_file_id"), 400)
      }
      const parsed = parseLines(file.content, endpoint)
      const failure = "code" in parsed ? parsed : undefined
      const lines = "code" in parsed ? [] : parsed.lines
      const modelName = "code" in parsed ? undefined : parsed.model
      const queuedTokens = promptTokensOf(endpoint, lines)
      const at = now()
      let limitFailure: ValidationError | undefined
      const limit = deps.options().enqueuedTokens
      if (failure === undefined && limit !== Infinity) {
        let queued = 0
        for (const other of order) if (other.model === modelName && queuedAt(other, at)) queued += other.queuedTokens
        if (queued + queuedTokens > limit) {
          limitFailure = {
            code: "token_limit_exceeded",
            message: `Enqueued token limit reached for ${modelName ?? "the model"}: Limit ${limit} enqueued tokens, ` +
              `${queued} in progress. Please try again once some in_progress batches have been completed.`
          }
        }
      }
      const batch = addBatch({
        flavour: "openai",
        id: `batch_sim_${nextBatch + 1}`,
        inputFileId: input_file_id,
        endpoint,
        metadata: (metadata as Record<string, string> | undefined) ?? null,
        lines,
        model: modelName,
        queuedTokens,
        failure: failure ?? limitFailure,
        nullPollsLeft: deps.options().nullOutputPolls
      })
      return json(batchObject(batch))
    }))

  /** A batch of one API: each sees only its own (an Anthropic batch id is unknown to OpenAI's endpoints, and the reverse). */
  const batchOf = (flavour: SimBatch["flavour"], id: string) => {
    const batch = batches.get(id)
    return batch?.flavour === flavour ? batch : undefined
  }

  const getBatch = guarded(() =>
    Effect.map(idInPath, (id) => {
      const batch = batchOf("openai", id)
      return batch === undefined ? noBatch(id) : json(batchObject(batch))
    }))

  const cancelBatch = guarded(() =>
    Effect.map(idInPath, (id) => {
      const batch = batchOf("openai", id)
      if (batch === undefined) return noBatch(id)
      const status = statusOf(batch)
      if (status === "completed" || status === "failed" || status === "expired") {
        return json(errorBody(`Cannot cancel a batch with status ${status}.`, null), 409)
      }
      batch.cancelledAt ??= now()
      return json(batchObject(batch))
    }))

  const listBatches = guarded((request) =>
    Effect.sync(() => {
      const query = new URL(request.url, "http://simulator").searchParams
      const limit = Math.min(100, Math.max(1, Number(query.get("limit") ?? 20) || 20))
      const after = query.get("after")
      const newestFirst = order.filter((b) => b.flavour === "openai").reverse()
      const start = after === null ? 0 : newestFirst.findIndex((b) => b.id === after) + 1
      const page = newestFirst.slice(start, start + limit)
      return json({
        object: "list",
        data: page.map(batchObject),
        first_id: page[0]?.id ?? null,
        last_id: page.at(-1)?.id ?? null,
        has_more: start + limit < newestFirst.length
      })
    }))

  // --- Anthropic's Message Batches ---------------------------------------------

  const anthropicError = (status: number, type: string, message: string) => json({ type: "error", error: { type, message } }, status)
  const iso = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString())
  const customIdPattern = /^[A-Za-z0-9_-]{1,64}$/

  const messageBatchObject = (batch: SimBatch, request: HttpServerRequest.HttpServerRequest) => {
    statusOf(batch) // ends it, if its time has come
    const ended = batch.ended
    const counts = ended === undefined
      ? { processing: batch.lines.length, succeeded: 0, errored: 0, canceled: 0, expired: 0 }
      : { processing: 0, ...batch.anthropicCounts }
    return {
      id: batch.id,
      type: "message_batch",
      processing_status: ended !== undefined ? "ended" : batch.cancelledAt !== undefined ? "canceling" : "in_progress",
      request_counts: counts,
      ended_at: iso(ended?.at),
      created_at: iso(batch.createdAt),
      expires_at: iso(batch.createdAt + deps.options().windowMs),
      archived_at: null,
      cancel_initiated_at: iso(batch.cancelledAt),
      results_url: ended === undefined ? null : `http://${request.headers["host"] ?? "127.0.0.1"}/v1/messages/batches/${batch.id}/results`
    }
  }

  const anthropicBatch = (id: string) => batchOf("anthropic", id)
  const noMessageBatch = (id: string) => anthropicError(404, "not_found_error", `No message batch found with id '${id}'.`)

  const createMessageBatch = guarded((request) =>
    Effect.gen(function*() {
      const body = yield* Effect.option(request.json)
      const requests = body._tag === "Some" && typeof body.value === "object" && body.value !== null
        ? (body.value as { requests?: unknown }).requests
        : undefined
      if (!Array.isArray(requests) || requests.length === 0) {
        return anthropicError(400, "invalid_request_error", "requests: a non-empty array is required")
      }
      if (requests.length > deps.options().maxRequests) {
        return anthropicError(400, "invalid_request_error", `requests: at most ${deps.options().maxRequests} requests in a batch`)
      }
      const seen = new Set<string>()
      const lines: Array<Line> = []
      for (let i = 0; i < requests.length; i++) {
        const entry = requests[i] as { custom_id?: unknown, params?: unknown } | null
        const customId = entry?.custom_id
        if (typeof customId !== "string" || !customIdPattern.test(customId)) {
          return anthropicError(400, "invalid_request_error", `requests.${i}.custom_id: 1 to 64 of letters, digits, _ and - are required`)
        }
        if (seen.has(customId)) return anthropicError(400, "invalid_request_error", `requests.${i}.custom_id: ${customId} is used twice`)
        seen.add(customId)
        if (typeof entry?.params !== "object" || entry.params === null) {
          return anthropicError(400, "invalid_request_error", `requests.${i}.params: an object is required`)
        }
        lines.push({ customId, body: entry.params })
      }
      const batch = addBatch({
        flavour: "anthropic",
        id: `msgbatch_sim_${nextBatch + 1}`,
        inputFileId: "",
        endpoint: "/v1/messages",
        metadata: null,
        lines,
        model: undefined,
        queuedTokens: 0,
        failure: undefined,
        nullPollsLeft: 0
      })
      return json(messageBatchObject(batch, request))
    }))

  const getMessageBatch = guarded((request) =>
    Effect.map(idInPath, (id) => {
      const batch = anthropicBatch(id)
      return batch === undefined ? noMessageBatch(id) : json(messageBatchObject(batch, request))
    }))

  const cancelMessageBatch = guarded((request) =>
    Effect.map(idInPath, (id) => {
      const batch = anthropicBatch(id)
      if (batch === undefined) return noMessageBatch(id)
      statusOf(batch)
      if (batch.ended === undefined) batch.cancelledAt ??= now()
      return json(messageBatchObject(batch, request))
    }))

  const messageBatchResults = guarded(() =>
    Effect.map(idInPath, (id) => {
      const batch = anthropicBatch(id)
      if (batch === undefined) return noMessageBatch(id)
      statusOf(batch)
      const file = batch.outputFileId === null ? undefined : liveFile(batch.outputFileId)
      if (file === undefined) return anthropicError(404, "not_found_error", `Message batch ${id} has not ended: no results yet.`)
      return HttpServerResponse.text(file.content, { contentType: "application/x-jsonl" })
    }))

  const listMessageBatches = guarded((request) =>
    Effect.sync(() => {
      const query = new URL(request.url, "http://simulator").searchParams
      const limit = Math.min(1000, Math.max(1, Number(query.get("limit") ?? 20) || 20))
      const after = query.get("after_id")
      const newestFirst = order.filter((b) => b.flavour === "anthropic").reverse()
      const start = after === null ? 0 : newestFirst.findIndex((b) => b.id === after) + 1
      const page = newestFirst.slice(start, start + limit)
      return json({
        data: page.map((b) => messageBatchObject(b, request)),
        has_more: start + limit < newestFirst.length,
        first_id: page[0]?.id ?? null,
        last_id: page.at(-1)?.id ?? null
      })
    }))

  return {
    anthropicRoutes: { createMessageBatch, getMessageBatch, cancelMessageBatch, messageBatchResults, listMessageBatches },
    routes: {
      uploadFile,
      getFile,
      fileContent,
      deleteFile,
      createBatch,
      getBatch,
      cancelBatch,
      listBatches
    },
    metrics: (): Metrics => {
      const billedTwice: Record<string, number> = {}
      for (const [id, n] of billed) if (n > 1) billedTwice[id] = n
      return { uploads, created, linesBilled, billedTwice }
    },
    reset: () => {
      files = new Map()
      batches = new Map()
      order = []
      uploads = 0
      created = 0
      linesBilled = 0
      billed = new Map()
    }
  }
}

const shuffle = <A>(items: Array<A>, random: () => number) => {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const t = items[i]!
    items[i] = items[j]!
    items[j] = t
  }
}
