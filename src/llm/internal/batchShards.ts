/**
 * Planning a provider batch (issue #13, the Batch API mode): how items are
 * named in a batch file (`custom_id`) and how they are packed into shards.
 *
 * - A `custom_id` is `<run key>_<round>_<index>`: at most 64 characters of
 *   `[A-Za-z0-9_-]`, valid for OpenAI and Anthropic alike, and it names the
 *   item without a lookup table.
 * - Shards are packed in input order, one model per shard (OpenAI takes one
 *   per file), each within a line count, a byte size (a line's bytes with
 *   its newline) and an estimated token count (the most a provider queues
 *   for one model, so a shard can always be admitted alone). A shard is cut
 *   as soon as its next line would not fit; lines of other models go on
 *   filling their own open shard meanwhile.
 *
 * What it does not promise: admission (how many shards may be queued at the
 * provider at once) is the runner's; a single line over a limit is refused
 * (`LineTooLarge`) rather than sent to fail there.
 */

/** Limits of one shard. */
export interface ShardLimits {
  readonly maxRequests: number
  readonly maxBytes: number
  /** Estimated tokens per shard at most (a provider's enqueued-token limit per model); none by default. */
  readonly maxTokens?: number | undefined
}

/** A line to place: the item's index, its model, its serialised size and estimated tokens. */
export interface Line {
  readonly index: number
  readonly model: string
  /** Bytes of the serialised line, its newline included. */
  readonly bytes: number
  readonly tokens: number
}

/** A shard: its model and its lines' indices (in input order), with their totals. */
export interface Shard {
  readonly model: string
  readonly indices: ReadonlyArray<number>
  readonly bytes: number
  readonly tokens: number
}

/** A line that no shard can hold alone, and why. */
export class LineTooLarge extends Error {
  constructor(readonly index: number, readonly reason: string) {
    super(`item ${index}: ${reason}`)
  }
}

interface Open {
  indices: Array<number>
  bytes: number
  tokens: number
}

/**
 * Packs lines into shards as they come: `add` returns the shard the line
 * closed (if the line did not fit in its model's open shard), `finish` the
 * shards still open. Throws `LineTooLarge` for a line over a limit alone.
 */
export class Planner {
  private readonly open = new Map<string, Open>()

  constructor(private readonly limits: ShardLimits) {
    if (!(limits.maxRequests >= 1) || !(limits.maxBytes >= 1) || !(limits.maxTokens === undefined || limits.maxTokens >= 1)) {
      throw new RangeError(`shard limits must be ≥ 1: ${JSON.stringify(limits)}`)
    }
  }

  add(line: Line): Shard | undefined {
    const { maxBytes, maxTokens } = this.limits
    if (line.bytes > maxBytes) throw new LineTooLarge(line.index, `${line.bytes} bytes, and a shard holds ${maxBytes}`)
    if (maxTokens !== undefined && line.tokens > maxTokens) {
      throw new LineTooLarge(line.index, `about ${line.tokens} tokens, and a shard holds ${maxTokens}`)
    }
    const current = this.open.get(line.model)
    let closed: Shard | undefined
    if (current !== undefined && !this.fits(current, line)) {
      closed = { model: line.model, indices: current.indices, bytes: current.bytes, tokens: current.tokens }
      this.open.delete(line.model)
    }
    const shard = this.open.get(line.model) ?? { indices: [], bytes: 0, tokens: 0 }
    shard.indices.push(line.index)
    shard.bytes += line.bytes
    shard.tokens += line.tokens
    this.open.set(line.model, shard)
    return closed
  }

  /** The shards still open, in the order their models first came. */
  finish(): Array<Shard> {
    const rest = Array.from(this.open, ([model, open]) => ({ model, indices: open.indices, bytes: open.bytes, tokens: open.tokens }))
    this.open.clear()
    return rest
  }

  private fits(shard: Open, line: Line): boolean {
    const { maxBytes, maxRequests, maxTokens } = this.limits
    return shard.indices.length < maxRequests && shard.bytes + line.bytes <= maxBytes &&
      (maxTokens === undefined || shard.tokens + line.tokens <= maxTokens)
  }
}

/** Every shard of `lines`, closed ones first, then those left open. */
export const plan = (lines: Iterable<Line>, limits: ShardLimits): Array<Shard> => {
  const planner = new Planner(limits)
  const shards: Array<Shard> = []
  for (const line of lines) {
    const closed = planner.add(line)
    if (closed !== undefined) shards.push(closed)
  }
  return [...shards, ...planner.finish()]
}

const runKeyPattern = /^[A-Za-z0-9-]{1,32}$/
const customIdPattern = /^([A-Za-z0-9-]{1,32})_(\d{1,9})_(\d{1,16})$/

/** The `custom_id` of item `index` in round `round` of the run keyed `runKey` (1–32 of `[A-Za-z0-9-]`). */
export const customId = (runKey: string, round: number, index: number): string => {
  if (!runKeyPattern.test(runKey)) throw new RangeError(`a run key is 1–32 letters, digits or -, got ${JSON.stringify(runKey)}`)
  if (!Number.isSafeInteger(round) || round < 0 || round > 999_999_999) throw new RangeError(`round must be 0–999999999, got ${round}`)
  if (!Number.isSafeInteger(index) || index < 0) throw new RangeError(`index must be a whole number ≥ 0, got ${index}`)
  return `${runKey}_${round}_${index}`
}

/** The round and index a `custom_id` names, if it is one of `runKey`'s; else `undefined` (another run's, or not ours). */
export const parseCustomId = (id: string, runKey: string): { readonly round: number, readonly index: number } | undefined => {
  const match = customIdPattern.exec(id)
  if (match === null || match[1] !== runKey) return undefined
  const round = Number(match[2])
  const index = Number(match[3])
  return Number.isSafeInteger(index) ? { round, index } : undefined
}
