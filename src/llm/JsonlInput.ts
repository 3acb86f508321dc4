/**
 * Reads a JSONL file of chat inputs lazily, one line at a time: the input of
 * the CLI's `run` and of the job service's `file` submissions.
 *
 * Each non-empty line is either a JSON string (a prompt, sent as one user
 * message) or a chat request object (`ChatRequest.ChatRequest`: `messages`
 * and any other request field), optionally with an `id` (a string or a
 * number) that is kept for the results and never sent to the provider. A line
 * that is not JSON, not one of those shapes, or nested deeper than
 * `JsonDepth.limit`, becomes a `Rejected` entry whose `message` names the
 * file, the line number and what was wrong
 * (`prompts.jsonl:17: messages[0].content is missing`); reading goes on.
 *
 * The file is streamed (`FileSystem.stream` → UTF-8 decoding that keeps a
 * character split across chunks whole → lines), so memory stays bounded by
 * a chunk whatever the file size. `\n` and `\r\n` end lines; a last line
 * without a newline counts; blank (or whitespace-only) lines are skipped but
 * still counted, so line numbers are those an editor shows. A UTF-8 byte
 * order mark at the start is ignored.
 *
 * What it does not promise: a lone `\r` does not end a line (JSON cannot
 * hold a raw one anyway, so such a line is rejected as invalid JSON); bytes
 * that are not UTF-8 are decoded as U+FFFD, not rejected.
 *
 * @since 0.1.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import type * as PlatformError from "@effect/platform/Error"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as JsonDepth from "../JsonDepth.js"
import * as ChatRequest from "./ChatRequest.js"
import { issuePath } from "../internal/issuePath.js"

/**
 * A non-blank line of the file.
 *
 * @since 0.1.0
 * @category models
 */
export interface Line {
  /** 1-based, counting blank lines too. */
  readonly number: number
  readonly text: string
}

/**
 * An input line that holds a prompt or a request.
 *
 * @since 0.1.0
 * @category models
 */
export interface Entry {
  readonly _tag: "Entry"
  /** 0-based position among the non-blank lines. */
  readonly index: number
  readonly line: number
  readonly id: string | number | undefined
  /** What goes to the provider (the `id` removed). */
  readonly input: ChatRequest.ChatInput
}

/**
 * An input line that cannot be sent.
 *
 * @since 0.1.0
 * @category models
 */
export interface Rejected {
  readonly _tag: "Rejected"
  readonly index: number
  readonly line: number
  /** The line's `id`, when it parsed and had a valid one. */
  readonly id: string | number | undefined
  /** `file:line: what was wrong`. */
  readonly message: string
}

/**
 * @since 0.1.0
 * @category models
 */
export type Item = Entry | Rejected

const byteOrderMark = "\uFEFF"

/**
 * The non-blank lines of a byte stream, numbered.
 *
 * @since 0.1.0
 * @category reading
 */
export const lines = <E, R>(bytes: Stream.Stream<Uint8Array, E, R>): Stream.Stream<Line, E, R> =>
  bytes.pipe(
    Stream.decodeText("utf-8"),
    Stream.splitLines,
    Stream.mapAccum(0, (previous, text) => {
      const number = previous + 1
      return [number, { number, text: number === 1 && text.startsWith(byteOrderMark) ? text.slice(1) : text }] as const
    }),
    Stream.filter((line) => line.text.trim() !== "")
  )

const decodeRequest = Schema.decodeUnknownEither(ChatRequest.ChatRequest)

const maxDetail = 160

/** The first schema issue, as `messages[0].content is missing` or `max_tokens: expected an integer, actual 1.5`. */
const describeIssue = (error: ParseResult.ParseError): string => {
  const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
  if (issue === undefined) return "not a valid chat request"
  const path = issuePath(issue.path)
  const message = issue.message.length > maxDetail ? `${issue.message.slice(0, maxDetail)}…` : issue.message
  if (issue._tag === "Missing") return `${path === "" ? "a field" : path} is missing`
  const detail = message.charAt(0).toLowerCase() + message.slice(1)
  return path === "" ? detail : `${path}: ${detail}`
}

const kindOf = (value: unknown): string =>
  value === null ? "null" : Array.isArray(value) ? "an array" : `a ${typeof value}`

/**
 * One line to an `Entry` or a `Rejected` naming `file:line`.
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (file: string, line: Line, index: number): Item => {
  const reject = (what: string, id?: string | number): Rejected => ({
    _tag: "Rejected",
    index,
    line: line.number,
    id,
    message: `${file}:${line.number}: ${what}`
  })
  let json: unknown
  try {
    json = JSON.parse(line.text)
  } catch (error) {
    return reject(`invalid JSON: ${error instanceof Error ? error.message : String(error)}`)
  }
  // Before anything walks it: a walk this deep would overflow the stack.
  if (JsonDepth.exceeds(json)) return reject(`nests arrays and objects more than ${JsonDepth.limit} levels deep`)
  if (typeof json === "string") {
    if (json.trim() === "") return reject("the prompt is an empty string")
    return { _tag: "Entry", index, line: line.number, id: undefined, input: json }
  }
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    return reject(`expected a prompt (a JSON string) or a chat request (a JSON object), got ${kindOf(json)}`)
  }
  const { id, ...request } = json as Record<string, unknown>
  if (id !== undefined && typeof id !== "string" && !(typeof id === "number" && Number.isFinite(id))) {
    return reject(`id must be a string or a number, got ${kindOf(id)}`)
  }
  const decoded = decodeRequest(request)
  if (Either.isLeft(decoded)) return reject(describeIssue(decoded.left), id)
  return { _tag: "Entry", index, line: line.number, id, input: decoded.right }
}

/**
 * The items of a byte stream; `file` names it in messages.
 *
 * @since 0.1.0
 * @category reading
 */
export const items = <E, R>(file: string, bytes: Stream.Stream<Uint8Array, E, R>): Stream.Stream<Item, E, R> =>
  lines(bytes).pipe(Stream.zipWithIndex, Stream.map(([line, index]) => parse(file, line, index)))

/**
 * The items of the file at `path`, read lazily.
 *
 * @since 0.1.0
 * @category reading
 */
export const read = (path: string): Stream.Stream<Item, PlatformError.PlatformError, FileSystem.FileSystem> =>
  Stream.unwrap(Effect.map(FileSystem.FileSystem, (fs) => items(path, fs.stream(path))))

/**
 * The number of non-blank lines of the file at `path` (one more pass over
 * it, streamed; for a progress total).
 *
 * @since 0.1.0
 * @category reading
 */
export const count = (path: string): Effect.Effect<number, PlatformError.PlatformError, FileSystem.FileSystem> =>
  Effect.flatMap(FileSystem.FileSystem, (fs) =>
    lines(fs.stream(path)).pipe(Stream.runFold(0, (n) => n + 1)))
