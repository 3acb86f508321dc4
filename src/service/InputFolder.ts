/**
 * Files a client names, read from a folder the server chose (the job
 * service's `--input-dir`) and from nowhere else. A name is a plain file
 * name (letters, digits, `.`, `_`, `-`; no folders, no `..`), and it is read
 * only if its real path — symbolic links resolved — is inside the real path
 * of the folder. The folder itself may be given through a link: its real
 * path is what counts. A name that leads to a directory is refused too.
 *
 * The file is opened once, and what was opened is what is checked: after
 * `open`, the name's real path must be inside the folder and be the very
 * file of the open handle (same device and inode), so a link re-pointed
 * between the open and the check is refused, not followed. The bytes are then
 * read from that handle (`read`, `bytes`), never by name again.
 *
 * What it does not promise: a hard link is the file itself, so a file
 * hard-linked into the folder is read wherever else it lives (whoever may
 * write in the folder decides what it holds); a directory above the real
 * path swapped for a link in the instant between the two checks is not seen
 * (Node has no `openat2(RESOLVE_BENEATH)`); a FIFO is opened like a file, so
 * its open waits for a writer.
 *
 * @since 0.1.0
 */
import type * as PlatformError from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"

/**
 * Why a name is not read: `NotAName` (not a plain file name), `NotFound`,
 * `Outside` (its real path is not inside the folder), `NotAFile` (a
 * directory, or another kind of entry), `Changed` (the name led elsewhere
 * once the file was open), `Unreadable` (permissions, I/O).
 *
 * @since 0.1.0
 * @category errors
 */
export class InputFolderError extends Data.TaggedError("InputFolderError")<{
  readonly reason: "NotAName" | "NotFound" | "Outside" | "NotAFile" | "Changed" | "Unreadable"
  readonly name: string
  readonly message: string
}> {}

const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/

/** The platform error's reason only: its message carries the server's own paths. */
const unreadable = (name: string) => (error: PlatformError.PlatformError) =>
  new InputFolderError({
    reason: error._tag === "SystemError" && error.reason === "NotFound" ? "NotFound" : "Unreadable",
    name,
    message: error._tag === "SystemError" && error.reason === "NotFound"
      ? `no file ${name} in the input folder`
      : `${name} cannot be read (${error._tag === "SystemError" ? error.reason : "bad argument"})`
  })

/**
 * Checks that the open `file` is what `name` names inside `dir`: the real
 * path of `name` is inside the real path of `dir`, it is a regular file, and
 * it is the same file (device and inode) as the handle.
 *
 * @since 0.1.0
 * @category checks
 */
export const verify = (
  file: FileSystem.File,
  dir: string,
  name: string
): Effect.Effect<void, InputFolderError, FileSystem.FileSystem | Path.Path> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const refuse = (reason: InputFolderError["reason"], message: string) =>
      Effect.fail(new InputFolderError({ reason, name, message }))
    const opened = yield* Effect.mapError(file.stat, unreadable(name))
    const realDir = yield* Effect.mapError(fs.realPath(dir), unreadable(name))
    // Gone since the open: it was re-pointed or removed under us.
    const real = yield* fs.realPath(path.join(dir, name)).pipe(
      Effect.catchAll(() => refuse("Changed", `${name} changed while it was being opened; try again`))
    )
    const relative = path.relative(realDir, real)
    if (path.isAbsolute(relative) || relative.split(path.sep)[0] === "..") {
      return yield* refuse("Outside", `${name} is outside the input folder (a link is followed to its real path, which must be inside the folder)`)
    }
    if (opened.type !== "File") {
      return yield* refuse("NotAFile", `${name} is ${opened.type === "Directory" ? "a directory" : "not a regular file"}, not a file to read`)
    }
    const named = yield* fs.stat(real).pipe(
      Effect.catchAll(() => refuse("Changed", `${name} changed while it was being opened; try again`))
    )
    const sameFile = named.dev === opened.dev && Option.isSome(named.ino) && Option.isSome(opened.ino) &&
      named.ino.value === opened.ino.value
    if (!sameFile) return yield* refuse("Changed", `${name} changed while it was being opened; try again`)
  })

/**
 * Opens `name` in `dir` for reading, once, and `verify`s the handle.
 *
 * @since 0.1.0
 * @category opening
 */
export const open = (
  dir: string,
  name: string
): Effect.Effect<FileSystem.File, InputFolderError, FileSystem.FileSystem | Path.Path | Scope.Scope> =>
  Effect.gen(function*() {
    if (!namePattern.test(name) || name.includes("..")) {
      return yield* Effect.fail(
        new InputFolderError({
          reason: "NotAName",
          name,
          message: `${JSON.stringify(name)} is not a file name (letters, digits, . _ -; no folders)`
        })
      )
    }
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const file = yield* Effect.mapError(fs.open(path.join(dir, name), { flag: "r" }), unreadable(name))
    yield* verify(file, dir, name)
    return file
  })

const chunkSize = FileSystem.KiB(64)

/**
 * The bytes of an open file, from where its position is to its end.
 *
 * @since 0.1.0
 * @category reading
 */
export const bytes = (file: FileSystem.File): Stream.Stream<Uint8Array, PlatformError.PlatformError> =>
  Stream.repeatEffectOption(
    Effect.flatMap(Effect.mapError(file.readAlloc(chunkSize), Option.some), (chunk) =>
      Option.match(chunk, { onNone: () => Effect.fail(Option.none()), onSome: Effect.succeed }))
  )

/**
 * The bytes of `name` in `dir`: `open`, then `bytes` of that handle; the
 * file is closed when the stream ends.
 *
 * @since 0.1.0
 * @category reading
 */
export const read = (
  dir: string,
  name: string
): Stream.Stream<Uint8Array, InputFolderError, FileSystem.FileSystem | Path.Path> =>
  Stream.unwrapScoped(Effect.map(open(dir, name), (file) => Stream.mapError(bytes(file), unreadable(name))))
