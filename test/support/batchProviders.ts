/**
 * Helpers for tests of batch providers on the `TestClock`: poll a batch
 * until it ends (moving the clock between reads), and group result lines by
 * meaning.
 */
import { Duration, Effect, TestClock } from "effect"
import type * as BatchProvider from "../../src/llm/BatchProvider.js"

/** Polls `id`, moving the clock by `step` between reads, until it has ended; every state seen on the way. */
export const untilEnded = (provider: BatchProvider.Service, id: string, step: Duration.DurationInput = "1 second") =>
  Effect.gen(function*() {
    const seen: Array<string> = []
    for (let i = 0; i < 1000; i++) {
      const status = yield* provider.poll(id)
      if (seen.at(-1) !== status.state) seen.push(status.state)
      if (status.ended !== undefined) return { status, seen }
      yield* TestClock.adjust(step)
    }
    return yield* Effect.dieMessage(`batch ${id} never ended`)
  })

/** The `custom_id`s of the lines by meaning (a malformed line by its message), sorted. */
export const byTag = (outcomes: ReadonlyArray<BatchProvider.LineOutcome>) => {
  const tags: Record<string, Array<string>> = {}
  for (const o of outcomes) (tags[o._tag] ??= []).push(o._tag === "Malformed" ? o.message : o.customId)
  for (const list of Object.values(tags)) list.sort()
  return tags
}
