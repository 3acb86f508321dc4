/** A task with the three fates a batch item can meet, for the span and metric tests. */
import { Effect } from "effect"
import * as TaskError from "../../src/TaskError.js"

/**
 * Item 1 fails once (`Transient`), then succeeds; item 2 fails for good
 * (`Permanent`); every other call runs `succeed`. Each call of this makes a
 * task with a count of its own.
 */
export const threeFates = (succeed: (item: number) => Effect.Effect<number>) => {
  const calls = new Map<number, number>()
  return (item: number) =>
    Effect.suspend((): Effect.Effect<number, TaskError.TaskError> => {
      const n = (calls.get(item) ?? 0) + 1
      calls.set(item, n)
      if (item === 1 && n === 1) return Effect.fail(new TaskError.Transient({ message: "503" }))
      if (item === 2) return Effect.fail(new TaskError.Permanent({ message: "400" }))
      return succeed(item)
    })
}
