/**
 * What one item of an LLM batch asks for: a prompt (sent as one user
 * message) or a whole OpenAI-style chat request. Only schemas: the JSONL
 * reader, the job service's HTTP contract and the adapter (`OpenAiCompat`)
 * share them, and importing them loads nothing else.
 *
 * What it does not promise: a message is `role` and `content` only, so other
 * message fields (`name`, `tool_call_id`, ...) are dropped when decoded.
 *
 * @since 0.1.0
 */
import * as Schema from "effect/Schema"

/**
 * @since 0.1.0
 * @category schemas
 */
export const Message = Schema.Struct({
  role: Schema.String,
  content: Schema.String
})

/**
 * A chat request as one JSONL line may hold it: `messages`, and any other
 * request field (`model`, `max_tokens`, `temperature`, ...), passed through.
 *
 * @since 0.1.0
 * @category schemas
 */
export const ChatRequest = Schema.Struct(
  {
    messages: Schema.NonEmptyArray(Message),
    model: Schema.optional(Schema.String),
    max_tokens: Schema.optional(Schema.Int.pipe(Schema.positive()))
  },
  Schema.Record({ key: Schema.String, value: Schema.Unknown })
)

/**
 * @since 0.1.0
 * @category models
 */
export type ChatRequest = typeof ChatRequest.Type

/**
 * A prompt (sent as one user message) or a whole request.
 *
 * @since 0.1.0
 * @category models
 */
export type ChatInput = string | ChatRequest
