/**
 * A store of finished task results, so a re-run never pays twice for the same
 * call.
 *
 * A batch looks each item's cache key up before calling; a hit succeeds with
 * `source: "cache"` and makes no call, and a success is stored under its key.
 * Keys come from `key(parts)`: the SHA-256 of the canonical JSON of what
 * decides the answer, e.g. `{ model, params, input }`. Values are JSON (the
 * engine encodes them with a Schema first); every backend stores the JSON
 * text, so what comes back is a fresh copy equal to
 * `JSON.parse(JSON.stringify(value))`, whichever backend holds it.
 *
 * Backends: `layerMemory` (a `Map`, optionally bounded with LRU eviction)
 * and, in `effect-batch/sql`, `SqlResultCache.layer`, which needs only a
 * `SqlClient` (SQLite or PostgreSQL) and creates its table if missing.
 *
 * What it does not promise: entries never expire (no TTL: delete a key, or
 * drop the table, to forget it); it is not a lock, so two fibers or processes
 * that miss the same key at once both call and both store (the last write
 * wins, and both values were valid answers); a failure of the store is a
 * `ResultCacheError` that the engine treats as a miss, never as a failed item.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as hashing from "./internal/hashing.js"

/**
 * @since 0.1.0
 * @category models
 */
export type Operation = "get" | "getMany" | "set" | "delete" | "size"

/**
 * The store could not do `operation`: it is unreachable, a stored value is
 * not JSON, or a value to store is not JSON. Callers treat it as a miss (on
 * reads) or a lost write, and log it.
 *
 * @since 0.1.0
 * @category errors
 */
export class ResultCacheError extends Data.TaggedError("ResultCacheError")<{
  readonly operation: Operation
  readonly key?: string | undefined
  readonly cause: unknown
}> {
  override get message(): string {
    const reason = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `ResultCache.${this.operation}${this.key === undefined ? "" : ` (key ${this.key})`} failed: ${reason}`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Store {
  /** The stored JSON value of `key`, or `None`. */
  readonly get: (key: string) => Effect.Effect<Option.Option<unknown>, ResultCacheError>
  /** The stored values of those `keys` that have one (misses are absent from the map). */
  readonly getMany: (keys: Iterable<string>) => Effect.Effect<ReadonlyMap<string, unknown>, ResultCacheError>
  /** Stores `value` (which must be JSON) under `key`, replacing what was there. */
  readonly set: (key: string, value: unknown) => Effect.Effect<void, ResultCacheError>
  /** Forgets `key`; nothing happens if it is absent. */
  readonly delete: (key: string) => Effect.Effect<void, ResultCacheError>
  /** The number of stored entries. */
  readonly size: Effect.Effect<number, ResultCacheError>
}

/**
 * The result cache of a batch. Without this layer a batch caches nothing.
 *
 * @since 0.1.0
 * @category tags
 */
export class ResultCache extends Context.Tag("effect-batch/ResultCache")<ResultCache, Store>() {}

// ---------------------------------------------------------------------------
// keys
// ---------------------------------------------------------------------------

/**
 * The canonical JSON text of `parts`, the text `key` hashes: object fields
 * sorted by name (UTF-16 code unit order) at every depth, arrays in their
 * order, `undefined` fields dropped and `toJSON` applied as `JSON.stringify`
 * does. Throws `IllegalArgumentException` naming the path (`$.params.fn`) of
 * a function, symbol, bigint, non-finite number, `Map`, `Set` or cycle, and
 * when `parts` itself is `undefined`.
 *
 * @since 0.1.0
 * @category keys
 */
export const canonicalJson = (parts: unknown): string => hashing.canonicalJson(parts, "ResultCache.key")

/**
 * A stable cache key for `parts`: the SHA-256, in lowercase hex, of
 * `canonicalJson(parts)`. Field order does not matter; everything JSON keeps
 * does, so a different model, any changed parameter or input gives a different
 * key. Pass everything that decides the answer (model, parameters, prompt
 * version, input) and nothing that does not (request ids, timestamps), or
 * every run misses.
 *
 * @example
 * ```ts
 * ResultCache.key({ model: "gpt-4o-mini", params: { temperature: 0 }, input: "Hello" })
 * ```
 *
 * @since 0.1.0
 * @category keys
 */
export const key = (parts: unknown): string => hashing.hashOf(parts, "ResultCache.key")

// ---------------------------------------------------------------------------
// backends
// ---------------------------------------------------------------------------

/**
 * For backends: the JSON text a value is stored as, or a `ResultCacheError`
 * naming `operation` and `key` when the value is not JSON. Every backend
 * stores this text, so every backend gives back the same copy.
 *
 * @since 0.1.0
 * @category backends
 */
export const encodeValue = (operation: Operation, key: string, value: unknown): Effect.Effect<string, ResultCacheError> =>
  Effect.try({
    try: () => {
      const json: string | undefined = JSON.stringify(value)
      if (json === undefined) throw new TypeError(`a value of type ${typeof value} is not JSON`)
      return json
    },
    catch: (cause) => new ResultCacheError({ operation, key, cause })
  })

/**
 * For backends: the value stored as `json`, or a `ResultCacheError` naming
 * `operation` and `key` when the text is not JSON (a corrupted row).
 *
 * @since 0.1.0
 * @category backends
 */
export const decodeValue = (operation: Operation, key: string, json: string): Effect.Effect<unknown, ResultCacheError> =>
  Effect.try({ try: () => JSON.parse(json) as unknown, catch: (cause) => new ResultCacheError({ operation, key, cause }) })

// ---------------------------------------------------------------------------
// memory
// ---------------------------------------------------------------------------

/**
 * @since 0.1.0
 * @category models
 */
export interface MemoryOptions {
  /**
   * The most entries kept; storing one more evicts the least recently read
   * or written. Default: unbounded. An integer ≥ 1.
   */
  readonly capacity?: number | undefined
}

/**
 * A store in a `Map`, lost with the process. Values are kept as JSON text,
 * as the SQL store keeps them, so both behave alike.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory = (options: MemoryOptions = {}): Effect.Effect<Store> => {
  const capacity = options.capacity ?? Number.POSITIVE_INFINITY
  if (options.capacity !== undefined && !(Number.isInteger(capacity) && capacity >= 1)) {
    throw new Cause.IllegalArgumentException(`ResultCache.layerMemory: capacity must be an integer ≥ 1, got ${options.capacity}`)
  }
  return Effect.sync(() => {
    // A Map iterates in insertion order, so re-inserting on use makes its first key the least recently used.
    const entries = new Map<string, string>()
    const read = (key: string): string | undefined => {
      const json = entries.get(key)
      if (json !== undefined && capacity !== Number.POSITIVE_INFINITY) {
        entries.delete(key)
        entries.set(key, json)
      }
      return json
    }
    return {
      get: (key) =>
        Effect.suspend(() => {
          const json = read(key)
          return json === undefined ? Effect.succeedNone : Effect.asSome(decodeValue("get", key, json))
        }),
      getMany: (keys) =>
        Effect.suspend(() => {
          const found = new Map<string, unknown>()
          for (const key of keys) {
            const json = read(key)
            // Cannot throw: the text was written by JSON.stringify.
            if (json !== undefined) found.set(key, JSON.parse(json))
          }
          return Effect.succeed(found)
        }),
      set: (key, value) =>
        Effect.map(encodeValue("set", key, value), (json) => {
          entries.delete(key)
          entries.set(key, json)
          if (entries.size > capacity) entries.delete(entries.keys().next().value!)
        }),
      delete: (key) => Effect.sync(() => void entries.delete(key)),
      size: Effect.sync(() => entries.size)
    }
  })
}

/**
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (options: MemoryOptions = {}): Layer.Layer<ResultCache> =>
  Layer.effect(ResultCache, makeMemory(options))
