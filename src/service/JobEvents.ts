/**
 * Each job's event log: what its SSE subscribers are sent (progress, item
 * failures, limit changes, state changes), numbered per job, kept in the
 * `JobStore` so a subscriber that reconnects with `Last-Event-ID` gets what
 * it missed, and fanned out live through a `PubSub`.
 *
 * `publish` buffers; a writer fiber stores the buffer every `flushEvery`
 * (100 ms) in one statement per job and only then hands the events to live
 * subscribers, so an event a subscriber sees live is already stored.
 * `subscribe` first subscribes, then reads the stored events after the
 * subscriber's last id, then goes on live, skipping what it already sent:
 * nothing falls in between.
 *
 * What it does not promise: live fan-out is per process (a subscriber on
 * another service process sees only what is stored when it connects).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PubSub from "effect/PubSub"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import type * as Job from "./Job.js"
import * as JobStore from "./JobStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export type EventType = Job.EventType

/**
 * @since 0.1.0
 * @category models
 */
export interface Event {
  readonly jobId: string
  readonly seq: number
  readonly type: EventType
  /** JSON text: the type's payload (`Job.EventData`) and `at`. */
  readonly data: string
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Events {
  /** Buffers the event; its data gets `at`, the time it is published (ms since the epoch). */
  readonly publish: <T extends EventType>(jobId: string, type: T, data: Job.EventData[T]) => Effect.Effect<void>
  /** The job's events after `after` (stored ones first), then live ones, without end. */
  readonly subscribe: (jobId: string, after: number) => Stream.Stream<Event, JobStore.JobStoreError>
  /** Stores what is buffered now. */
  readonly flush: Effect.Effect<void, JobStore.JobStoreError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class JobEvents extends Context.Tag("effect-batch/JobEvents")<JobEvents, Events>() {}

/** How often buffered events are stored and sent. */
export const flushEvery = "100 millis"

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.gen(function*() {
  const store = yield* JobStore.JobStore
  const clock = yield* Effect.clock
  const hub = yield* PubSub.unbounded<Event>()
  const lastSeq = new Map<string, number>()
  let buffer: Array<Event> = []
  const lock = yield* Effect.makeSemaphore(1)

  const publish = <T extends EventType>(jobId: string, type: T, data: Job.EventData[T]): Effect.Effect<void> =>
    Effect.suspend(() => {
      const known = lastSeq.get(jobId)
      // The first event of a job in this process continues its stored numbering.
      const next = known === undefined
        ? Effect.map(Effect.orDie(store.lastSeq(jobId)), (stored) => Math.max(stored, lastSeq.get(jobId) ?? 0) + 1)
        : Effect.succeed(known + 1)
      return Effect.map(next, (seq) => {
        lastSeq.set(jobId, seq)
        // Every event says when it happened (ms since the epoch), so a subscriber can tell how late it arrived.
        const at = clock.unsafeCurrentTimeMillis()
        buffer.push({ jobId, seq, type, data: JSON.stringify({ ...data, at }) })
      })
    }).pipe(lock.withPermits(1))

  const flush = lock.withPermits(1)(Effect.suspend(() => {
    if (buffer.length === 0) return Effect.void
    const events = buffer
    buffer = []
    const byJob = new Map<string, Array<Event>>()
    for (const event of events) {
      const list = byJob.get(event.jobId)
      if (list === undefined) byJob.set(event.jobId, [event])
      else list.push(event)
    }
    const at = clock.unsafeCurrentTimeMillis()
    return Effect.zipRight(
      Effect.forEach(byJob, ([jobId, list]) => store.appendEvents(jobId, list.map((e) => ({ ...e, at }))), { discard: true }),
      PubSub.publishAll(hub, events)
    )
  }))

  yield* flush.pipe(
    Effect.tapErrorCause(Effect.logError),
    Effect.ignore,
    Effect.repeat(Schedule.spaced(flushEvery)),
    Effect.forkScoped
  )
  yield* Effect.addFinalizer(() => Effect.ignore(flush))

  const subscribe = (jobId: string, after: number): Stream.Stream<Event, JobStore.JobStoreError> =>
    Stream.unwrapScoped(Effect.gen(function*() {
      const live = yield* PubSub.subscribe(hub)
      const stored = yield* store.events(jobId, after)
      let sent = stored.length === 0 ? after : stored[stored.length - 1]!.seq
      const backlog = Stream.fromIterable(stored.map((e): Event => ({ ...e, jobId })))
      const rest = Stream.fromQueue(live).pipe(
        Stream.filter((e) => {
          if (e.jobId !== jobId || e.seq <= sent) return false
          sent = e.seq
          return true
        })
      )
      return Stream.concat(backlog, rest)
    }))

  return { publish, subscribe, flush } satisfies Events
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<JobEvents, never, JobStore.JobStore> = Layer.scoped(JobEvents, make)
