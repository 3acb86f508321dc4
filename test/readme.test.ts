/**
 * The README's code snippets are cut from the runnable examples: each ```ts
 * block after a `<!-- cut from examples/NN.ts -->` marker must appear in that
 * file line for line (up to a common indentation), so a snippet cannot drift
 * from code that type-checks and runs.
 */
import { readFileSync } from "node:fs"
import { describe, expect, it } from "vitest"

const root = new URL("../", import.meta.url)
const readme = readFileSync(new URL("README.md", root), "utf8")

interface Snippet {
  readonly file: string
  readonly line: number
  readonly lines: ReadonlyArray<string>
}

const snippets: Array<Snippet> = []
const marker = /<!-- cut from (\S+) -->\n```ts\n([\s\S]*?)\n```/g
for (const match of readme.matchAll(marker)) {
  snippets.push({
    file: match[1]!,
    line: readme.slice(0, match.index).split("\n").length,
    lines: match[2]!.split("\n")
  })
}

const indentOf = (line: string) => line.length - line.trimStart().length

/** Whether `lines` occur in `source` contiguously, all shifted by one common indentation. */
const occursIn = (source: ReadonlyArray<string>, lines: ReadonlyArray<string>) => {
  for (let start = 0; start + lines.length <= source.length; start++) {
    const shift = indentOf(source[start]!) - indentOf(lines[0]!)
    if (shift < 0) continue
    const matches = lines.every((line, i) => {
      const candidate = source[start + i]!
      return line === "" ? candidate.trim() === "" : candidate === " ".repeat(shift) + line
    })
    if (matches) return true
  }
  return false
}

describe("README", () => {
  it("has snippets cut from examples", () => {
    expect(snippets.length).toBeGreaterThanOrEqual(5)
    expect(new Set(snippets.map((snippet) => snippet.file)).size).toBeGreaterThanOrEqual(5)
  })

  it.each(snippets.map((snippet) => [`${snippet.file} (README line ${snippet.line})`, snippet] as const))(
    "snippet from %s is in its file, verbatim",
    (_, snippet) => {
      const source = readFileSync(new URL(snippet.file, root), "utf8").split("\n")
      expect(occursIn(source, snippet.lines), `README line ${snippet.line} drifted from ${snippet.file}`).toBe(true)
    }
  )

  it("detects a drifted snippet", () => {
    const source = ["const a = 1", "  const b = 2", "  return a + b"]
    expect(occursIn(source, ["const b = 2", "return a + b"])).toBe(true)
    expect(occursIn(source, ["const b = 3", "return a + b"])).toBe(false)
  })
})
