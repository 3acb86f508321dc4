/**
 * Client-named files are read from the input folder only, links resolved:
 * on real files and symbolic links in a temporary folder, including a link
 * re-pointed between the open and the check.
 */
import { FileSystem } from "@effect/platform"
import { NodeContext } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Stream } from "effect"
import { mkdirSync, mkdtempSync, renameSync, symlinkSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as InputFolder from "../../src/service/InputFolder.js"

const root = mkdtempSync(join(tmpdir(), "effect-batch-inputfolder-"))
const input = join(root, "input")
const outside = join(root, "outside")
mkdirSync(input)
mkdirSync(outside)
mkdirSync(join(input, "data"))
mkdirSync(join(outside, "private"))
writeFileSync(join(input, "good.jsonl"), "\"inside\"\n")
writeFileSync(join(input, "other.jsonl"), "\"the other file\"\n")
writeFileSync(join(outside, "secret.jsonl"), "\"secret\"\n")
symlinkSync(join(outside, "secret.jsonl"), join(input, "out.jsonl"))
symlinkSync("../outside/secret.jsonl", join(input, "up.jsonl"))
symlinkSync(join(outside, "private"), join(input, "outdir"))
symlinkSync(join(input, "data"), join(input, "indir"))
symlinkSync(".", join(input, "self"))
symlinkSync(join(input, "good.jsonl"), join(input, "alias.jsonl"))
symlinkSync("good.jsonl", join(input, "relative.jsonl"))
symlinkSync(join(outside, "missing.jsonl"), join(input, "dangling.jsonl"))
symlinkSync(input, join(root, "input-link"))

const text = (dir: string, name: string) =>
  InputFolder.read(dir, name).pipe(Stream.decodeText(), Stream.mkString, Effect.provide(NodeContext.layer))

const refusal = (dir: string, name: string) =>
  text(dir, name).pipe(Effect.flip, Effect.map((e) => ({ reason: e.reason, message: e.message })))

/** Points the link `name` in `input` at `target`, atomically (a rename over it). */
const repoint = (name: string, target: string) => {
  const temporary = join(input, `${name}.next`)
  symlinkSync(target, temporary)
  renameSync(temporary, join(input, name))
}

describe("InputFolder", () => {
  it.effect("a file in the folder, and links to files in the folder (absolute or relative), are read", () =>
    Effect.gen(function*() {
      expect(yield* text(input, "good.jsonl")).toBe("\"inside\"\n")
      expect(yield* text(input, "alias.jsonl")).toBe("\"inside\"\n")
      expect(yield* text(input, "relative.jsonl")).toBe("\"inside\"\n")
    }))

  it.effect("the folder given as a link counts by its real path", () =>
    Effect.gen(function*() {
      expect(yield* text(join(root, "input-link"), "good.jsonl")).toBe("\"inside\"\n")
      expect(yield* text(join(root, "input-link"), "alias.jsonl")).toBe("\"inside\"\n")
      expect((yield* refusal(join(root, "input-link"), "out.jsonl")).reason).toBe("Outside")
    }))

  it.effect("a link to a file outside is refused as outside the folder, never as missing", () =>
    Effect.gen(function*() {
      for (const name of ["out.jsonl", "up.jsonl"]) {
        const error = yield* refusal(input, name)
        expect(error.reason).toBe("Outside")
        expect(error.message).toBe(`${name} is outside the input folder (a link is followed to its real path, which must be inside the folder)`)
        expect(error.message).not.toContain(outside)
      }
    }))

  it.effect("a directory is not a file: a directory, a link to one inside, the folder itself; a link to one outside is outside", () =>
    Effect.gen(function*() {
      for (const name of ["data", "indir", "self"]) {
        expect(yield* refusal(input, name)).toEqual({ reason: "NotAFile", message: `${name} is a directory, not a file to read` })
      }
      expect((yield* refusal(input, "outdir")).reason).toBe("Outside")
    }))

  it.effect("names are plain file names; a missing file or a dangling link is not found", () =>
    Effect.gen(function*() {
      for (const name of ["../outside/secret.jsonl", "/etc/passwd", "a/b.jsonl", ".hidden", "x..y", ""]) {
        expect((yield* refusal(input, name)).reason).toBe("NotAName")
      }
      expect(yield* refusal(input, "missing.jsonl")).toEqual({ reason: "NotFound", message: "no file missing.jsonl in the input folder" })
      expect((yield* refusal(input, "dangling.jsonl")).reason).toBe("NotFound")
    }))

  it.scoped("a link re-pointed after the open is refused: what was opened is what is checked", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      // Opened on good.jsonl; by the check, the name leads outside.
      symlinkSync(join(input, "good.jsonl"), join(input, "swap.jsonl"))
      const first = yield* fs.open(join(input, "swap.jsonl"), { flag: "r" })
      yield* InputFolder.verify(first, input, "swap.jsonl")
      repoint("swap.jsonl", join(outside, "secret.jsonl"))
      expect((yield* Effect.flip(InputFolder.verify(first, input, "swap.jsonl"))).reason).toBe("Outside")
      // Opened on good.jsonl; by the check, the name leads to another file inside: not the file opened.
      repoint("swap.jsonl", join(input, "good.jsonl"))
      const second = yield* fs.open(join(input, "swap.jsonl"), { flag: "r" })
      repoint("swap.jsonl", join(input, "other.jsonl"))
      const changed = yield* Effect.flip(InputFolder.verify(second, input, "swap.jsonl"))
      expect(changed).toMatchObject({ reason: "Changed", message: "swap.jsonl changed while it was being opened; try again" })
      // Opened on a file outside; by the check, the name leads inside: still not the file opened.
      repoint("swap.jsonl", join(outside, "secret.jsonl"))
      const third = yield* fs.open(join(input, "swap.jsonl"), { flag: "r" })
      repoint("swap.jsonl", join(input, "good.jsonl"))
      expect((yield* Effect.flip(InputFolder.verify(third, input, "swap.jsonl"))).reason).toBe("Changed")
    }).pipe(Effect.provide(NodeContext.layer)))

  it.scoped("the bytes come from the open handle, not from the name read again", () =>
    Effect.gen(function*() {
      symlinkSync(join(input, "good.jsonl"), join(input, "held.jsonl"))
      const file = yield* InputFolder.open(input, "held.jsonl")
      repoint("held.jsonl", join(outside, "secret.jsonl"))
      const read = yield* Stream.runCollect(Stream.decodeText(InputFolder.bytes(file)))
      expect(Chunk.join(read, "")).toBe("\"inside\"\n")
    }).pipe(Effect.provide(NodeContext.layer)))
})
