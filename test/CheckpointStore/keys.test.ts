import { describe, expect, it } from "@effect/vitest"
import { FastCheck, Schema } from "effect"
import * as CheckpointStore from "../../src/CheckpointStore.js"

describe("CheckpointStore.itemKeyOf", () => {
  it("is stable: the index, a colon and 32 hex digits of the SHA-256 of the canonical JSON", () => {
    // Cross-checked with: printf '%s' '{"id":1,"prompt":"Hello"}' | sha256sum
    expect(CheckpointStore.itemKeyOf(0, { prompt: "Hello", id: 1 })).toBe("0:b64320f7302ee731c77e88e61f1bde64")
    expect(CheckpointStore.itemKeyOf(41, { id: 1, prompt: "Hello" })).toBe("41:b64320f7302ee731c77e88e61f1bde64")
  })

  it("a changed item, or the same item at another index, has another key", () => {
    const key = CheckpointStore.itemKeyOf(3, { id: 1, prompt: "Hello" })
    expect(CheckpointStore.itemKeyOf(3, { id: 2, prompt: "Hello" })).toBe("3:f63fcb14efa2487d56c0e3fb457ab3b3")
    expect(CheckpointStore.itemKeyOf(3, { id: 1, prompt: "Hello!" })).not.toBe(key)
    expect(CheckpointStore.itemKeyOf(3, { id: 1, prompt: "Hello", extra: null })).not.toBe(key)
    expect(CheckpointStore.itemKeyOf(4, { id: 1, prompt: "Hello" })).not.toBe(key)
    expect(CheckpointStore.itemKeyOf(3, "1")).not.toBe(CheckpointStore.itemKeyOf(3, 1))
  })

  it.prop("has the form <index>:<32 hex digits> and ignores the order of object fields", [
    FastCheck.nat(),
    FastCheck.dictionary(FastCheck.string(), FastCheck.jsonValue(), { maxKeys: 6 })
  ], ([index, item]) => {
    const key = CheckpointStore.itemKeyOf(index, item)
    expect(key).toMatch(new RegExp(`^${index}:[0-9a-f]{32}$`))
    expect(CheckpointStore.itemKeyOf(index, Object.fromEntries(Object.entries(item).reverse()))).toBe(key)
  })

  it("rejects a bad index and an item that is not JSON", () => {
    for (const index of [-1, 1.5, Number.NaN, 2 ** 53]) {
      expect(() => CheckpointStore.itemKeyOf(index, "x")).toThrow(/^CheckpointStore\.itemKeyOf: index must be an integer ≥ 0/)
    }
    expect(() => CheckpointStore.itemKeyOf(0, { n: 1n })).toThrow("CheckpointStore.itemKeyOf: cannot hash a bigint at $.n")
  })
})

describe("CheckpointStore.fingerprintOf", () => {
  it("is stable: the SHA-256 of the parts, each prefixed with its UTF-8 length", () => {
    // Cross-checked with: printf '%s' '1:a2:bc' | sha256sum (and so on)
    expect(CheckpointStore.fingerprintOf(["a", "bc"])).toBe("5310a58788781ab25d5ad7c3f85035824b4eb7bdfa394e0ac2186271472b5492")
    expect(CheckpointStore.fingerprintOf(["ab", "c"])).toBe("430fb1b4ac43316eca81fab27a1930ab8eff8fef6a1dc7903dce44bbc2790dc5")
    expect(CheckpointStore.fingerprintOf(["é", ""])).toBe("f48aa107ce279182a70c763fad46fd34c1678a6f48ab90aba1b4d4a95abc0f87")
    expect(CheckpointStore.fingerprintOf([])).toBe("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
  })

  it("order matters, and so does every part", () => {
    const keys = ["0:aa", "1:bb", "2:cc"]
    const fingerprint = CheckpointStore.fingerprintOf(keys)
    expect(CheckpointStore.fingerprintOf(["0:aa", "2:cc", "1:bb"])).not.toBe(fingerprint)
    expect(CheckpointStore.fingerprintOf(["0:aa", "1:bb"])).not.toBe(fingerprint)
    expect(CheckpointStore.fingerprintOf(["0:aa", "1:bb", "2:cd"])).not.toBe(fingerprint)
    expect(CheckpointStore.fingerprintOf([...keys, ""])).not.toBe(fingerprint)
  })

  it("takes any iterable, e.g. a generator of the item keys of the first items", () => {
    const items = [{ q: "a" }, { q: "b" }, { q: "c" }]
    function* firstKeys() {
      yield "definition"
      for (let i = 0; i < 2; i++) yield CheckpointStore.itemKeyOf(i, items[i])
    }
    expect(CheckpointStore.fingerprintOf(firstKeys())).toBe(
      CheckpointStore.fingerprintOf(["definition", CheckpointStore.itemKeyOf(0, { q: "a" }), CheckpointStore.itemKeyOf(1, { q: "b" })])
    )
  })

  it.prop("tells apart any two different lists of parts", [
    FastCheck.array(FastCheck.string({ unit: "grapheme" }), { maxLength: 5 }),
    FastCheck.array(FastCheck.string({ unit: "grapheme" }), { maxLength: 5 })
  ], ([a, b]) => {
    const same = a.length === b.length && a.every((part, i) => part === b[i])
    expect(CheckpointStore.fingerprintOf(a) === CheckpointStore.fingerprintOf(b)).toBe(same)
  })

  it("rejects a part that is not a string", () => {
    expect(() => CheckpointStore.fingerprintOf([1 as unknown as string])).toThrow("CheckpointStore.fingerprintOf: parts must be strings")
  })
})

describe("CheckpointStore errors", () => {
  it("CheckpointMismatch says which run, both fingerprints (shortened) and what to do", () => {
    const error = new CheckpointStore.CheckpointMismatch({ runId: "nightly", expected: "a".repeat(64), found: "b".repeat(64) })
    expect(error.message).toBe(
      "run \"nightly\" was started with a different input (fingerprint \"aaaaaaaaaaaa…\", now \"bbbbbbbbbbbb…\"); " +
        "resume it with its own input, or start another run (another id, or forget this one)"
    )
    expect(new CheckpointStore.CheckpointMismatch({ runId: "r", expected: "v1", found: "v2" }).message).toContain("\"v1\", now \"v2\"")
  })

  it("CheckpointMismatch survives encoding, as a persisted or transmitted error", () => {
    const error = new CheckpointStore.CheckpointMismatch({ runId: "r", expected: "x", found: "y" })
    const encoded = Schema.encodeSync(CheckpointStore.CheckpointMismatch)(error)
    expect(encoded).toEqual({ _tag: "CheckpointMismatch", runId: "r", expected: "x", found: "y" })
    expect(Schema.decodeUnknownSync(CheckpointStore.CheckpointMismatch)(encoded)).toEqual(error)
  })

  it("CheckpointError names the operation, the run and the reason", () => {
    expect(new CheckpointStore.CheckpointError({ operation: "record", runId: "r1", cause: new Error("disk full") }).message)
      .toBe("CheckpointStore.record (run \"r1\") failed: disk full")
    expect(new CheckpointStore.CheckpointError({ operation: "list", cause: "locked" }).message).toBe("CheckpointStore.list failed: locked")
    expect(new CheckpointStore.CheckpointError({ operation: "setup", cause: "x.db is not a SQLite database" }).message)
      .toBe("the checkpoint store could not be set up: x.db is not a SQLite database")
  })
})
