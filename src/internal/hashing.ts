/**
 * The hashing behind cache keys, checkpoint item keys and idempotency keys:
 * canonical JSON (fields sorted at every depth) and its SHA-256. Public as
 * `ResultCache.canonicalJson` and `ResultCache.key`; here so that modules
 * which only hash (the checkpoint store, the job service) need not import
 * the result cache.
 */
import * as Cause from "effect/Cause"
import { createHash } from "node:crypto"

const pathOf = (parent: string, name: string): string =>
  /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name) ? `${parent}.${name}` : `${parent}[${JSON.stringify(name)}]`

const unhashable = (who: string, what: string, path: string, hint: string): never => {
  throw new Cause.IllegalArgumentException(`${who}: cannot hash ${what} at ${path} (${hint})`)
}

const canonical = (who: string, value: unknown, name: string, path: string, ancestors: Set<object>): string | undefined => {
  if (value !== null && typeof value === "object" && typeof (value as { toJSON?: unknown }).toJSON === "function") {
    // As JSON.stringify does: a Date hashes as its ISO string.
    value = (value as { toJSON: (key: string) => unknown }).toJSON(name)
  }
  if (value instanceof Number || value instanceof String || value instanceof Boolean) value = value.valueOf()
  switch (typeof value) {
    case "undefined":
      return undefined
    case "string":
    case "boolean":
      return JSON.stringify(value)
    case "number":
      // JSON would write NaN and ±Infinity as null, so two different requests would share a key.
      return Number.isFinite(value) ? JSON.stringify(value) : unhashable(who, String(value), path, "only finite numbers are JSON")
    case "bigint":
      return unhashable(who, "a bigint", path, "convert it to a string or number first")
    case "symbol":
      return unhashable(who, "a symbol", path, "pass plain JSON data")
    case "function":
      return unhashable(who, "a function", path, "pass plain JSON data")
  }
  if (value === null) return "null"
  const object = value as object
  if (object instanceof Map || object instanceof Set) {
    // JSON would write `{}`: every Map would share one key.
    return unhashable(who, `a ${object instanceof Map ? "Map" : "Set"}`, path, "convert it to an object or array first")
  }
  if (ancestors.has(object)) return unhashable(who, "a cycle", path, "the value refers to itself")
  ancestors.add(object)
  let out: string
  if (Array.isArray(object)) {
    const items: Array<string> = []
    for (let i = 0; i < object.length; i++) {
      // As in JSON, an undefined element (or a hole) is null, so positions are kept.
      items.push(canonical(who, object[i], String(i), `${path}[${i}]`, ancestors) ?? "null")
    }
    out = `[${items.join(",")}]`
  } else {
    const fields: Array<string> = []
    for (const field of Object.keys(object).sort()) {
      const encoded = canonical(who, (object as Record<string, unknown>)[field], field, pathOf(path, field), ancestors)
      if (encoded !== undefined) fields.push(`${JSON.stringify(field)}:${encoded}`)
    }
    out = `{${fields.join(",")}}`
  }
  ancestors.delete(object)
  return out
}

/**
 * The canonical JSON text of `parts` (see `ResultCache.canonicalJson`);
 * `who` names the caller in the `IllegalArgumentException` for what is not
 * JSON.
 */
export const canonicalJson = (parts: unknown, who: string): string =>
  canonical(who, parts, "", "$", new Set()) ?? unhashable(who, "undefined", "$", "there is nothing to hash")

/** The SHA-256 of `text` (UTF-8), in lowercase hex. */
export const sha256Hex = (text: string): string => createHash("sha256").update(text, "utf8").digest("hex")

/** The SHA-256, in lowercase hex, of `canonicalJson(parts, who)`. */
export const hashOf = (parts: unknown, who: string): string => sha256Hex(canonicalJson(parts, who))
