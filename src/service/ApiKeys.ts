/**
 * The job service's API keys: which bearer key belongs to which tenant. Keys
 * come from configuration (`EFFECT_BATCH_API_KEYS="tenant=key,..."`), never
 * from the repository, and are held `Redacted`; a lookup compares SHA-256
 * digests in constant time, so answer times do not tell how much of a key
 * was right.
 *
 * What it does not promise: rotation without a restart; rate limits per key.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Redacted from "effect/Redacted"
import { createHash, timingSafeEqual } from "node:crypto"

/**
 * @since 0.1.0
 * @category models
 */
export interface Keys {
  /** The tenant of `key`, if it is one of the configured keys. */
  readonly tenantOf: (key: Redacted.Redacted) => string | undefined
  readonly tenants: ReadonlyArray<string>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class ApiKeys extends Context.Tag("effect-batch/ApiKeys")<ApiKeys, Keys>() {}

/** Keys shorter than this are refused: they could be guessed. */
export const minKeyLength = 16

const digest = (text: string) => createHash("sha256").update(text, "utf8").digest()

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (entries: ReadonlyArray<{ readonly tenant: string, readonly key: Redacted.Redacted }>): Keys => {
  const digests = entries.map((entry) => ({ tenant: entry.tenant, digest: digest(Redacted.value(entry.key)) }))
  return {
    tenantOf: (key) => {
      const presented = digest(Redacted.value(key))
      let found: string | undefined
      // Every digest is compared, so the time does not depend on which key matched.
      for (const entry of digests) if (timingSafeEqual(entry.digest, presented)) found ??= entry.tenant
      return found
    },
    tenants: Array.from(new Set(entries.map((entry) => entry.tenant)))
  }
}

/**
 * Reads `tenant=key` pairs separated by commas; the error names the pair
 * that is wrong (without echoing the key).
 *
 * @since 0.1.0
 * @category constructors
 */
export const parse = (text: string): Either.Either<Keys, string> => {
  const entries: Array<{ tenant: string, key: Redacted.Redacted }> = []
  const pairs = text.split(",").map((pair) => pair.trim()).filter((pair) => pair !== "")
  if (pairs.length === 0) return Either.left("no keys: expected tenant=key pairs separated by commas")
  for (const [i, pair] of pairs.entries()) {
    const at = pair.indexOf("=")
    const tenant = at < 0 ? "" : pair.slice(0, at).trim()
    const key = at < 0 ? "" : pair.slice(at + 1).trim()
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(tenant)) {
      return Either.left(`pair ${i + 1}: expected tenant=key with a tenant of letters, digits, . _ - (at most 64)`)
    }
    if (key.length < minKeyLength) return Either.left(`pair ${i + 1} (tenant ${tenant}): the key must have at least ${minKeyLength} characters`)
    if (entries.some((entry) => Redacted.value(entry.key) === key)) return Either.left(`pair ${i + 1} (tenant ${tenant}): this key is given twice`)
    entries.push({ tenant, key: Redacted.make(key) })
  }
  return Either.right(make(entries))
}

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (keys: Keys): Layer.Layer<ApiKeys> => Layer.succeed(ApiKeys, keys)
