/**
 * What one line of a provider batch's results means for its item (issue
 * #13, the Batch API mode): answered, failed for good, to be sent again in
 * the next round, or cancelled by us.
 *
 * - OpenAI: a line of the output or error file,
 *   `{id, custom_id, response: {status_code, request_id, body} | null, error: {code, message} | null}`.
 *   200 is an answer; 400/401/403/404/409/422 fail for good; 408, 429 and
 *   5xx go again; `response: null` with `batch_expired` goes again, with
 *   `batch_cancelled` is cancelled.
 * - Anthropic: a line of `results_url`,
 *   `{custom_id, result: {type: succeeded|errored|canceled|expired, message?|error?}}`.
 *   `errored` with `invalid_request_error` (or authentication, permission,
 *   not found) fails for good; `api_error`, `overloaded_error`, rate limits
 *   go again; `expired` goes again; `canceled` is cancelled.
 *
 * What it does not promise: a line that is not one of these shapes is
 * `Malformed` (named by what was wrong), never guessed at; the caller
 * decides what an item with no line at all means (the batch ended without
 * it: go again).
 */

/** The meaning of one results line. */
export type LineOutcome =
  | { readonly _tag: "Answered", readonly customId: string, readonly body: unknown }
  | { readonly _tag: "Permanent", readonly customId: string, readonly status: number | undefined, readonly message: string }
  | { readonly _tag: "Again", readonly customId: string, readonly reason: string }
  | { readonly _tag: "Cancelled", readonly customId: string }
  | { readonly _tag: "Malformed", readonly message: string }

const isRecord = (value: unknown): value is Record<string, unknown> => typeof value === "object" && value !== null && !Array.isArray(value)

const malformed = (message: string): LineOutcome => ({ _tag: "Malformed", message })

const messageOf = (value: unknown): string | undefined => {
  if (!isRecord(value)) return undefined
  if (typeof value["message"] === "string") return value["message"]
  return isRecord(value["error"]) ? messageOf(value["error"]) : undefined
}

/** HTTP statuses an OpenAI batch line fails with for good: the request itself is wrong. */
const permanentStatuses = new Set([400, 401, 403, 404, 409, 413, 422])

/** One line (parsed JSON) of an OpenAI batch's output or error file. */
export const openAiLine = (line: unknown): LineOutcome => {
  if (!isRecord(line)) return malformed("a line is a JSON object")
  const customId = line["custom_id"]
  if (typeof customId !== "string") return malformed("custom_id: a string is expected")
  const response = line["response"]
  const error = line["error"]
  if (response === null || response === undefined) {
    const code = isRecord(error) && typeof error["code"] === "string" ? error["code"] : undefined
    if (code === "batch_cancelled") return { _tag: "Cancelled", customId }
    if (code === "batch_expired") return { _tag: "Again", customId, reason: "the batch expired before this request ran" }
    // Another error without a response: nothing says the request is wrong, so it goes again.
    return { _tag: "Again", customId, reason: messageOf(error) ?? code ?? "no response" }
  }
  if (!isRecord(response) || typeof response["status_code"] !== "number") return malformed(`${customId}: response.status_code: a number is expected`)
  const status = response["status_code"]
  const body = response["body"]
  if (status === 200) return { _tag: "Answered", customId, body }
  const message = messageOf(body) ?? `HTTP ${status}`
  if (permanentStatuses.has(status)) return { _tag: "Permanent", customId, status, message }
  return { _tag: "Again", customId, reason: `HTTP ${status}: ${message}` }
}

/** Anthropic error types that say the request itself is wrong. */
const permanentTypes = new Set(["invalid_request_error", "authentication_error", "permission_error", "not_found_error", "request_too_large"])

/** One line (parsed JSON) of an Anthropic message batch's results. */
export const anthropicLine = (line: unknown): LineOutcome => {
  if (!isRecord(line)) return malformed("a line is a JSON object")
  const customId = line["custom_id"]
  if (typeof customId !== "string") return malformed("custom_id: a string is expected")
  const result = line["result"]
  if (!isRecord(result) || typeof result["type"] !== "string") return malformed(`${customId}: result.type: a string is expected`)
  switch (result["type"]) {
    case "succeeded":
      return { _tag: "Answered", customId, body: result["message"] }
    case "canceled":
      return { _tag: "Cancelled", customId }
    case "expired":
      return { _tag: "Again", customId, reason: "the batch expired before this request ran" }
    case "errored": {
      // `{error: {type: "error", error: {type, message}}}` (the API's error envelope), or the inner error itself.
      const outer = isRecord(result["error"]) ? result["error"] : {}
      const inner = isRecord(outer["error"]) ? outer["error"] : outer
      const type = typeof inner["type"] === "string" ? inner["type"] : "unknown_error"
      const message = messageOf(inner) ?? type
      return permanentTypes.has(type)
        ? { _tag: "Permanent", customId, status: undefined, message: `${type}: ${message}` }
        : { _tag: "Again", customId, reason: `${type}: ${message}` }
    }
    default:
      return malformed(`${customId}: result.type ${JSON.stringify(result["type"])} is not succeeded, errored, canceled or expired`)
  }
}
