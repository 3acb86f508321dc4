/**
 * A `Console` that records what `log` and `error` print instead of printing
 * it, for tests of commands that report on stdout / stderr.
 */
import { Console, Effect } from "effect"

export interface Captured {
  readonly out: Array<string>
  readonly err: Array<string>
  /** Runs `effect` with this console. */
  readonly capture: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

export const make: Effect.Effect<Captured> = Effect.map(Effect.console, (base) => {
  const out: Array<string> = []
  const err: Array<string> = []
  const text = (args: ReadonlyArray<unknown>) => args.map(String).join(" ")
  const console: Console.Console = {
    ...base,
    log: (...args) => Effect.sync(() => void out.push(text(args))),
    error: (...args) => Effect.sync(() => void err.push(text(args))),
    unsafe: {
      ...base.unsafe,
      log: (...args) => void out.push(text(args)),
      error: (...args) => void err.push(text(args))
    }
  }
  return { out, err, capture: (effect) => Effect.withConsole(effect, console) }
})
