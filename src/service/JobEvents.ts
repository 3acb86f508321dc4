/**
 * Each job's event log: what its SSE subscribers are sent (progress, item
 * failures, limit changes, state changes), numbered per job by the
 * `JobStore`, kept there so a subscriber that reconnects with
 * `Last-Event-ID` — to this process or another — gets what it missed, and
 * fanned out live.
 *
 * `publish` buffers; a writer fiber stores the buffer every `flushEvery`
 * (100 ms) in one statement per job and only then hands the events to live
 * subscribers in this process, and sends a `JobSignals` notice to the
 * others, so an event a subscriber sees live is already stored.
 * `subscribe` first listens, then reads the stored events after the
 * subscriber's last id, then goes on live: an event from this process is
 * sent as it comes if it is the next one; otherwise (a notice from another
 * process, a gap, and every `pollEvery` when notices cross processes) what
 * is stored after the last one sent is read. Nothing falls in between, and
 * every subscriber gets every event once, in order.
 *
 * What it does not promise: how soon an event published in another process
 * arrives — a notice's delay, or `pollEvery` when a notice is lost.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import type * as Job from "./Job.js"
import * as JobSignals from "./JobSignals.js"
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
 * When notices cross processes (and can be lost), how often a subscriber
 * also reads the store.
 *
 * @since 0.1.0
 * @category constants
 */
export const pollEvery = "2 seconds"

interface Pending {
  readonly jobId: string
  readonly type: EventType
  readonly data: string
}

/** What a live subscriber is woken by: an event stored by this process, or "look at the store". */
type Wake = Event | "read"

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.gen(function*() {
  const store = yield* JobStore.JobStore
  const signals = yield* JobSignals.JobSignals
  const clock = yield* Effect.clock
  const hub = yield* PubSub.unbounded<Event>()
  let buffer: Array<Pending> = []
  // One flush at a time: two at once could store one job's later events first.
  const lock = yield* Effect.makeSemaphore(1)

  const publish = <T extends EventType>(jobId: string, type: T, data: Job.EventData[T]): Effect.Effect<void> =>
    Effect.sync(() => {
      // Every event says when it happened (ms since the epoch), so a subscriber can tell how late it arrived.
      const at = clock.unsafeCurrentTimeMillis()
      buffer.push({ jobId, type, data: JSON.stringify({ ...data, at }) })
    })

  const flush = lock.withPermits(1)(Effect.suspend(() => {
    if (buffer.length === 0) return Effect.void
    const pending = buffer
    buffer = []
    const byJob = new Map<string, Array<Pending>>()
    for (const event of pending) {
      const list = byJob.get(event.jobId)
      if (list === undefined) byJob.set(event.jobId, [event])
      else list.push(event)
    }
    const at = clock.unsafeCurrentTimeMillis()
    return Effect.forEach(byJob, ([jobId, list]) =>
      Effect.gen(function*() {
        const last = yield* store.appendEvents(jobId, list.map(({ data, type }) => ({ type, data, at })))
        const first = last - list.length + 1
        yield* PubSub.publishAll(hub, list.map((e, i): Event => ({ jobId, seq: first + i, type: e.type, data: e.data })))
        if (signals.shared) yield* signals.send("events", `${jobId} ${last}`)
      }), { discard: true })
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
      const notices = yield* signals.subscribe("events")
      let sent = after
      /** What is stored after the last event sent. */
      const stored = Effect.map(store.events(jobId, sent), (events) => {
        const fresh = events.filter((e) => e.seq > sent).map((e): Event => ({ ...e, jobId }))
        if (fresh.length > 0) sent = fresh[fresh.length - 1]!.seq
        return fresh
      })
      const ours: Stream.Stream<Wake> = Stream.fromQueue(live).pipe(Stream.filter((e) => e.jobId === jobId))
      const noticed = Stream.fromQueue(notices).pipe(
        Stream.filterMap((notice) => {
          const [id, last] = notice.split(" ")
          return id === jobId && Number(last) > sent ? Option.some<Wake>("read") : Option.none()
        })
      )
      const polled = signals.shared ? Stream.as(Stream.fromSchedule(Schedule.spaced(pollEvery)), "read" as Wake) : Stream.empty
      const wakes = Stream.mergeAll([ours, noticed, polled], { concurrency: 3 })
      const rest = wakes.pipe(
        Stream.mapEffect((wake): Effect.Effect<ReadonlyArray<Event>, JobStore.JobStoreError> => {
          if (wake === "read") return stored
          if (wake.seq <= sent) return Effect.succeed([])
          if (wake.seq === sent + 1) {
            sent = wake.seq
            return Effect.succeed([wake])
          }
          // Another process stored events in between: read them, this one with them.
          return stored
        }),
        Stream.flattenIterables
      )
      return Stream.concat(Stream.flattenIterables(Stream.fromEffect(stored)), rest)
    }))

  return { publish, subscribe, flush } satisfies Events
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<JobEvents, never, JobStore.JobStore | JobSignals.JobSignals> = Layer.scoped(JobEvents, make)
