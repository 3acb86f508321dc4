/**
 * The pure model behind `Simulator`: a seeded PRNG, the per-prompt hash, token
 * counting, the answer and embedding generators, the continuous-refill token
 * bucket and OpenAI's duration format. Nothing here reads a clock or does IO:
 * callers pass `now` in, so each piece is tested sample-in / value-out.
 *
 * Everything derived from a prompt goes through `hash32(seed, key)` and a
 * fresh `mulberry32` seeded with it, never through the shared PRNG, so the
 * same prompt gets the same answer whatever arrived before it.
 */

/** mulberry32: a 32-bit state PRNG, uniform in [0, 1). Tiny, fast, good enough for simulation draws. */
export const mulberry32 = (seed: number): () => number => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) | 0
    let t = Math.imul(state ^ (state >>> 15), 1 | state)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** FNV-1a over the UTF-16 code units, seeded, with a murmur3 finalizer so nearby inputs spread over all 32 bits. */
export const hash32 = (seed: number, text: string): number => {
  let h = (0x811c9dc5 ^ seed) >>> 0
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** A standard normal draw (Box–Muller). */
export const normal = (random: () => number): number => {
  const u = 1 - random() // (0, 1]: log(0) would be -Infinity
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random())
}

/**
 * A multiplier with median ≈ 1 and mean exactly 1: exp(σ·N(0,1) − σ²/2), so
 * jitter spreads latencies without moving their average.
 */
export const lognormalMultiplier = (sigma: number, random: () => number): number =>
  sigma === 0 ? 1 : Math.exp(sigma * normal(random) - (sigma * sigma) / 2)

/** The usual rule of thumb for English text: one token per four characters. */
export const countTokens = (text: string): number => Math.ceil(text.length / 4)

/** Prompt tokens of a chat: ⌈chars / 4⌉ per message plus 4 for its framing. */
export const chatPromptTokens = (texts: ReadonlyArray<string>): number => {
  let total = 0
  for (const text of texts) total += countTokens(text) + 4
  return total
}

/** A uniform integer in [min, max]. */
export const uniformInt = (random: () => number, min: number, max: number): number =>
  min + Math.floor(random() * (max - min + 1))

const vocabulary = [
  "the", "model", "answer", "is", "a", "simulated", "response", "that", "covers", "your", "question", "with",
  "plain", "words", "and", "some", "detail", "about", "it", "in", "short", "batch", "request", "token", "rate",
  "limit", "provider", "latency", "result", "of", "this", "call", "which", "we", "consider", "carefully", "here",
  "so", "you", "can", "test", "retries", "queues", "throughput", "under", "load", "as", "expected", "by", "design"
]

/**
 * About `words` words of text: "Regarding <first words of the prompt>:" and
 * then filler drawn from `random`, in sentences. Fewer than the mention's
 * words cuts the mention short (as `max_tokens` would).
 */
export const answerText = (prompt: string, words: number, random: () => number): string => {
  const out: Array<string> = ["Regarding"]
  const mention = prompt.trim().split(/\s+/, 6).filter((w) => w !== "")
  for (const word of mention) out.push(word.length > 24 ? word.slice(0, 24) : word)
  if (mention.length > 0) out[out.length - 1] += ":"
  let sentence = 0
  while (out.length < words) {
    const word = vocabulary[Math.floor(random() * vocabulary.length)]!
    out.push(sentence === 0 ? word[0]!.toUpperCase() + word.slice(1) : word)
    sentence = sentence >= 11 ? 0 : sentence + 1
    if (sentence === 0) out[out.length - 1] += "."
  }
  if (out.length > words) out.length = Math.max(1, words)
  return out.join(" ")
}

/** A unit-length vector of `dimensions` components drawn from `random`. */
export const unitVector = (dimensions: number, random: () => number): Array<number> => {
  const vector = new Array<number>(dimensions)
  let norm = 0
  for (let i = 0; i < dimensions; i++) {
    const x = normal(random)
    vector[i] = x
    norm += x * x
  }
  norm = Math.sqrt(norm)
  for (let i = 0; i < dimensions; i++) vector[i] = vector[i]! / norm
  return vector
}

const base64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

/** The vector as little-endian float32s in base64, as OpenAI answers `encoding_format: "base64"`. */
export const float32Base64 = (vector: ReadonlyArray<number>): string => {
  const bytes = new Uint8Array(new Float32Array(vector).buffer)
  let out = ""
  for (let i = 0; i < bytes.length; i += 3) {
    const a = bytes[i]!
    const b = bytes[i + 1]
    const c = bytes[i + 2]
    out += base64Alphabet[a >> 2]!
    out += base64Alphabet[((a & 3) << 4) | ((b ?? 0) >> 4)]!
    out += b === undefined ? "=" : base64Alphabet[((b & 15) << 2) | ((c ?? 0) >> 6)]!
    out += c === undefined ? "=" : base64Alphabet[c & 63]!
  }
  return out
}

/**
 * Formats a duration as OpenAI's `x-ratelimit-reset-*` headers do (Go's
 * `time.Duration` style), rounded to whole milliseconds: `"0s"`, `"20ms"`,
 * `"1s"`, `"1.5s"`, `"6m0s"`, `"1h2m3.5s"`.
 */
export const formatDuration = (millis: number): string => {
  const ms = Math.max(0, Math.round(millis))
  if (ms === 0) return "0s"
  if (ms < 1000) return `${ms}ms`
  const hours = Math.floor(ms / 3_600_000)
  const minutes = Math.floor((ms % 3_600_000) / 60_000)
  const seconds = `${(ms % 60_000) / 1000}s` // at most 3 decimals, no trailing zeros
  if (hours > 0) return `${hours}h${minutes}m${seconds}`
  if (minutes > 0) return `${minutes}m${seconds}`
  return seconds
}

// Float error from refills must not turn "fits exactly" into a 429 with retry-after-ms 0.
const epsilon = 1e-9

/**
 * A continuous-refill token bucket holding `bucketMs` worth of a per-minute
 * rate, starting full.
 *
 * A cost larger than the whole bucket is admitted once the bucket is full
 * and leaves it in debt (negative), so a request bigger than the bucket is
 * slow rather than impossible. Callers `refill(now)` before asking.
 */
export class TokenBucket {
  /** Units the bucket holds when full. */
  readonly capacity: number
  readonly perMs: number
  level: number
  private updatedAt: number

  constructor(readonly perMinute: number, readonly bucketMs: number, now: number, level?: number) {
    this.perMs = perMinute / 60_000
    this.capacity = this.perMs * bucketMs
    this.level = level === undefined ? this.capacity : Math.min(level, this.capacity)
    this.updatedAt = now
  }

  refill(now: number): void {
    if (now > this.updatedAt) {
      this.level = Math.min(this.capacity, this.level + (now - this.updatedAt) * this.perMs)
      this.updatedAt = now
    }
  }

  /** Milliseconds until `cost` fits; 0 when it fits now. */
  waitMillis(cost: number): number {
    const need = Math.min(cost, this.capacity)
    const missing = need - this.level
    return missing <= epsilon ? 0 : missing / this.perMs
  }

  take(cost: number): void {
    this.level -= cost
  }

  /** Whole units left, as `x-ratelimit-remaining-*` reports them. */
  get remaining(): number {
    return Math.max(0, Math.floor(this.level + epsilon))
  }

  /** Milliseconds until the bucket is full again. */
  get resetMillis(): number {
    return Math.max(0, (this.capacity - this.level) / this.perMs)
  }

  /** The bucket for new settings, keeping this one's level (capped at the new capacity). */
  resize(perMinute: number, bucketMs: number, now: number): TokenBucket {
    this.refill(now)
    return new TokenBucket(perMinute, bucketMs, now, this.level)
  }
}
