/**
 * The meaning of a provider batch's result lines, from the shapes the
 * providers document (OpenAI's output and error files, Anthropic's results).
 */
import { describe, expect, it } from "@effect/vitest"
import { anthropicLine, openAiLine } from "../../src/llm/internal/batchOutcomes.js"

const openAi = (customId: string, response: unknown, error: unknown = null) =>
  ({ id: "batch_req_1", custom_id: customId, response, error })

describe("OpenAI batch lines", () => {
  it("200 is an answer; the request's own errors are permanent; 408, 429 and 5xx go again", () => {
    const body = { id: "chatcmpl-1", choices: [{ message: { content: "hi" } }], usage: { total_tokens: 9 } }
    expect(openAiLine(openAi("r_0_1", { status_code: 200, request_id: "req_1", body }))).toEqual({ _tag: "Answered", customId: "r_0_1", body })
    expect(openAiLine(openAi("r_0_2", { status_code: 400, body: { error: { message: "bad max_tokens", type: "invalid_request_error" } } })))
      .toEqual({ _tag: "Permanent", customId: "r_0_2", status: 400, message: "bad max_tokens" })
    expect(openAiLine(openAi("r_0_3", { status_code: 404, body: {} }))).toMatchObject({ _tag: "Permanent", status: 404, message: "HTTP 404" })
    for (const status of [408, 429, 500, 502, 503]) {
      expect(openAiLine(openAi("r_0_4", { status_code: status, body: { error: { message: "later" } } })))
        .toEqual({ _tag: "Again", customId: "r_0_4", reason: `HTTP ${status}: later` })
    }
  })

  it("no response: expired goes again, cancelled is cancelled, any other error goes again", () => {
    expect(openAiLine(openAi("r_0_5", null, { code: "batch_expired", message: "This request could not be executed before the completion window expired." })))
      .toEqual({ _tag: "Again", customId: "r_0_5", reason: "the batch expired before this request ran" })
    expect(openAiLine(openAi("r_0_6", null, { code: "batch_cancelled", message: "cancelled" }))).toEqual({ _tag: "Cancelled", customId: "r_0_6" })
    expect(openAiLine(openAi("r_0_7", null, { code: "server_error", message: "oops" }))).toEqual({ _tag: "Again", customId: "r_0_7", reason: "oops" })
  })

  it("a line of another shape is malformed, named by what is wrong", () => {
    expect(openAiLine([1])).toEqual({ _tag: "Malformed", message: "a line is a JSON object" })
    expect(openAiLine({ response: null })).toEqual({ _tag: "Malformed", message: "custom_id: a string is expected" })
    expect(openAiLine(openAi("r_0_8", { status_code: "200" }))).toEqual({ _tag: "Malformed", message: "r_0_8: response.status_code: a number is expected" })
  })
})

describe("Anthropic batch results", () => {
  it("succeeded is an answer; invalid requests are permanent; server errors and expiry go again; canceled is cancelled", () => {
    const message = { id: "msg_1", content: [{ type: "text", text: "hi" }], usage: { input_tokens: 3, output_tokens: 2 } }
    expect(anthropicLine({ custom_id: "r_0_1", result: { type: "succeeded", message } })).toEqual({ _tag: "Answered", customId: "r_0_1", body: message })
    expect(anthropicLine({ custom_id: "r_0_2", result: { type: "errored", error: { type: "error", error: { type: "invalid_request_error", message: "max_tokens: too large" } } } }))
      .toEqual({ _tag: "Permanent", customId: "r_0_2", status: undefined, message: "invalid_request_error: max_tokens: too large" })
    expect(anthropicLine({ custom_id: "r_0_3", result: { type: "errored", error: { type: "overloaded_error", message: "Overloaded" } } }))
      .toEqual({ _tag: "Again", customId: "r_0_3", reason: "overloaded_error: Overloaded" })
    expect(anthropicLine({ custom_id: "r_0_4", result: { type: "expired" } })).toMatchObject({ _tag: "Again", customId: "r_0_4" })
    expect(anthropicLine({ custom_id: "r_0_5", result: { type: "canceled" } })).toEqual({ _tag: "Cancelled", customId: "r_0_5" })
  })

  it("a line of another shape is malformed, named by what is wrong", () => {
    expect(anthropicLine({ custom_id: "r_0_6" })).toEqual({ _tag: "Malformed", message: "r_0_6: result.type: a string is expected" })
    expect(anthropicLine({ custom_id: "r_0_7", result: { type: "pending" } }))
      .toEqual({ _tag: "Malformed", message: "r_0_7: result.type \"pending\" is not succeeded, errored, canceled or expired" })
  })
})
