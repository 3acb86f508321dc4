/**
 * Turns a batch's input (array, iterable or `Stream`) into a pull of the next
 * item to admit, in priority order.
 *
 * Arrays are ordered whole (a stable sort of their indices). Iterables and
 * streams are pulled lazily, only when a worker frees up; with a `priority`,
 * the order holds within a look-ahead window of `priorityWindow` items, the
 * price of never holding the whole input in memory.
 */
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { PriorityQueue } from "./priorityQueue.js"

export interface Admitted<A> {
  readonly item: A
  readonly index: number
}

/** What `unsafeTryNext` answers when the next item needs an effect to pull. */
export const notReady: unique symbol = Symbol.for("effect-batch/itemSource/notReady")

export interface ItemSource<A, E, R> {
  /** The next item, or `undefined` once the input is exhausted. */
  readonly next: Effect.Effect<Admitted<A> | undefined, E, R>
  /** `next`, when it can be answered without an effect (arrays always can). */
  readonly unsafeTryNext: () => Admitted<A> | undefined | typeof notReady
  /** The number of items, when known up front. */
  readonly total: number | undefined
}

export type Input<A, E, R> = Iterable<A> | Stream.Stream<A, E, R>

export const priorityWindow = 4096

const fromArray = <A>(
  items: ReadonlyArray<A>,
  priority: ((item: A, index: number) => number) | undefined
): ItemSource<A, never, never> => {
  let position = 0
  if (priority === undefined) {
    const unsafeTryNext = () => {
      if (position >= items.length) return undefined
      const index = position++
      return { item: items[index]!, index }
    }
    return { total: items.length, next: Effect.sync(unsafeTryNext), unsafeTryNext }
  }
  const priorities = Float64Array.from(items, (item, index) => priority(item, index))
  const order = Uint32Array.from(items, (_, index) => index).sort((a, b) => priorities[b]! - priorities[a]! || a - b)
  const unsafeTryNext = () => {
    if (position >= order.length) return undefined
    const index = order[position++]!
    return { item: items[index]!, index }
  }
  return { total: items.length, next: Effect.sync(unsafeTryNext), unsafeTryNext }
}

/**
 * Pulls items one at a time from `pullChunk`, reordering within a window when
 * there is a priority. Workers pull concurrently: refills take a lock, so the
 * underlying pull is never called twice at once.
 */
const fromPull = <A, E, R>(
  pullChunk: Effect.Effect<Chunk.Chunk<A> | undefined, E, R>,
  priority: ((item: A, index: number) => number) | undefined
): ItemSource<A, E, R> => {
  let buffer: Chunk.Chunk<A> = Chunk.empty()
  let offset = 0
  let nextIndex = 0
  let done = false
  const lock = Effect.unsafeMakeSemaphore(1)
  const refill: Effect.Effect<void, E, R> = lock.withPermits(1)(Effect.suspend(() =>
    offset < buffer.length || done
      ? Effect.void
      : Effect.map(pullChunk, (chunk) => {
          if (chunk === undefined) done = true
          else {
            buffer = chunk
            offset = 0
          }
        })
  ))
  const pullOne: Effect.Effect<Admitted<A> | undefined, E, R> = Effect.suspend(() => {
    if (offset < buffer.length) {
      const item = Chunk.unsafeGet(buffer, offset++)
      return Effect.succeed({ item, index: nextIndex++ })
    }
    if (done) return Effect.succeed(undefined)
    return Effect.zipRight(refill, pullOne)
  })
  const unsafeTryNext = () =>
    offset < buffer.length ? { item: Chunk.unsafeGet(buffer, offset++), index: nextIndex++ } : notReady
  if (priority === undefined) return { total: undefined, next: pullOne, unsafeTryNext }
  const queue = new PriorityQueue<A>()
  const fill: Effect.Effect<void, E, R> = Effect.suspend(() =>
    queue.size >= priorityWindow || (done && offset >= buffer.length)
      ? Effect.void
      : Effect.flatMap(pullOne, (admitted) => {
          if (admitted === undefined) return Effect.void
          queue.push({ ...admitted, priority: priority(admitted.item, admitted.index) })
          return fill
        })
  )
  return {
    total: undefined,
    next: Effect.map(fill, () => {
      const entry = queue.pop()
      return entry === undefined ? undefined : { item: entry.item, index: entry.index }
    }),
    unsafeTryNext: () => notReady
  }
}

export const make = <A, E, R>(
  input: Input<A, E, R>,
  priority: ((item: A, index: number) => number) | undefined
): Effect.Effect<ItemSource<A, E, R>, never, Scope.Scope | R> => {
  if (Array.isArray(input)) return Effect.succeed(fromArray(input as ReadonlyArray<A>, priority))
  if (Stream.StreamTypeId in (input as object)) {
    return Effect.map(Stream.toPull(input as Stream.Stream<A, E, R>), (pull) =>
      fromPull(
        Effect.catchAll(pull, (error) =>
          Option.match(error, { onNone: () => Effect.succeed(undefined), onSome: (e) => Effect.fail(e) })),
        priority
      ))
  }
  const iterator = (input as Iterable<A>)[Symbol.iterator]()
  if (priority === undefined) {
    let nextIndex = 0
    const unsafeTryNext = () => {
      const step = iterator.next()
      return step.done ? undefined : { item: step.value, index: nextIndex++ }
    }
    return Effect.succeed({ total: undefined, next: Effect.sync(unsafeTryNext), unsafeTryNext })
  }
  const pullChunk = Effect.sync(() => {
    const step = iterator.next()
    return step.done ? undefined : Chunk.of(step.value)
  })
  return Effect.succeed(fromPull<A, E, R>(pullChunk, priority))
}
