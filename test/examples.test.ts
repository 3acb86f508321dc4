/**
 * Every example runs as a user runs it (`node --import tsx examples/NN.ts`,
 * importing `effect-batch` mapped to `src/` by tsconfig's paths) and exits 0.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { execFile } from "node:child_process"
import { readdirSync } from "node:fs"

const root = new URL("../", import.meta.url).pathname
const examples = readdirSync(new URL("examples/", new URL("../", import.meta.url))).filter((name) => /^\d\d-.*\.ts$/.test(name)).sort()

const runExample = (name: string) =>
  Effect.async<{ readonly code: number, readonly output: string }>((resume) => {
    const child = execFile(process.execPath, ["--import", "tsx", `examples/${name}`], { cwd: root, timeout: 150_000 }, (error, stdout, stderr) =>
      resume(Effect.succeed({ code: error === null ? 0 : typeof error.code === "number" ? error.code : 1, output: `${stdout}${stderr}` })))
    return Effect.sync(() => child.kill())
  })

describe("examples", () => {
  it("are there", () => expect(examples.length).toBeGreaterThanOrEqual(6))
  for (const name of examples) {
    it.live(`${name} runs and exits 0`, () =>
      Effect.gen(function*() {
        const { code, output } = yield* runExample(name)
        expect(code, output).toBe(0)
        expect(output.trim()).not.toBe("")
      }))
  }
})
