/**
 * Each job's event log: what its SSE subscribers are sent (progress, item
 * failures, limit changes, state changes), numbered per job by the
 * `JobStore`, kept there so a subscriber that reconnects with
 * `Last-Event-ID` — to this process or another — gets what it missed, and
 * fanned out live.
 *
 * `publish` buffers; a writer fiber stores the buffer every `flushEvery`
 * (100 ms) in one statement per job and only then hands the events to live
 * subscribers in this process, and sends them to the others in a
 * `JobSignals` notice (only their last seq if they do not fit), so an event
 * a subscriber sees live is already stored. `subscribe` (and `follow`, the
 * same in batches, for SSE) first listens, then
 * reads the stored events after the subscriber's last id, then goes on
 * live: an event is sent as it comes if it is the next one; otherwise (a
 * gap, a notice without its events, or a subscriber found behind the store
 * when notices cross processes: one read of every subscribed job's last
 * seq, every `pollEvery`) what is stored after the last one sent is read.
 * Nothing falls in between, and every subscriber gets every event once, in
 * order.
 * `latest` keeps each running job's last event of each type seen here, so
 * the API can show a job's progress without reading the store.
 *
 * What it does not promise: how soon an event published in another process
 * arrives — a notice's delay, or `pollEvery` when a notice is lost.
 *
 * @since 0.1.0
 */
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as PubSub from "effect/PubSub"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { randomBytes } from "node:crypto"
import * as Job from "./Job.js"
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
  /**
   * What `subscribe` gives, read in batches: a follower of the job's events
   * after `after`, listening from when the scope opens it until it closes.
   */
  readonly follow: (jobId: string, after: number) => Effect.Effect<Follower, never, Scope.Scope>
  /** Stores what is buffered now. */
  readonly flush: Effect.Effect<void, JobStore.JobStoreError>
  /**
   * The job's latest event of `type` this process has seen (published here,
   * or told of by another process), if any: what the API shows of a job
   * without reading the store.
   */
  readonly latest: (jobId: string, type: EventType) => Event | undefined
}

/**
 * A job's events in batches: what an SSE response needs with one pull per
 * batch, where a stream of single events took several fiber steps per event
 * at each of its stages (100 subscribers' streams were most of the API's CPU
 * while 50 jobs started).
 *
 * @since 0.2.0
 * @category models
 */
export interface Follower {
  /**
   * The next events in order: every one there is now, at least one, waiting
   * for them up to `within`; none if none came within it. `ended` once there
   * will be no more (a follower of `JobEvents` never ends; one of `Jobs` ends
   * at the job's end).
   */
  readonly next: (within: Duration.Duration) => Effect.Effect<Batch, JobStore.JobStoreError>
}

/**
 * @since 0.2.0
 * @category models
 */
export interface Batch {
  readonly events: ReadonlyArray<Event>
  readonly ended: boolean
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

/** An event's stored data: its payload and `at`, when it happened (ms since the epoch), so a subscriber can tell how late it arrived. */
const dataOf = (data: object, at: number): string => JSON.stringify({ ...data, at })

/**
 * An event as `publish` would store it, for a caller that stores it itself:
 * a new job's first events go in with the job (`JobStore.insert`), not
 * through the buffer.
 *
 * @since 0.1.0
 * @category constructors
 */
export const newEvent = <T extends EventType>(type: T, data: Job.EventData[T], at: number): JobStore.NewEvent => ({
  type,
  data: dataOf(data, at),
  at
})

interface Pending {
  readonly jobId: string
  readonly type: EventType
  readonly data: string
}

/** What a live subscriber is woken by: an event, or "events up to `last` are stored". */
type Wake = Event | { readonly jobId: string, readonly last: number }

/** One job's part of a notice: its last seq, and its events when they fit. */
interface NoticeJob {
  readonly jobId: string
  readonly last: number
  readonly events?: ReadonlyArray<readonly [seq: number, type: EventType, data: string]>
}

/** A notice of stored events, as sent between processes: the sender and what each job got. */
interface Notice {
  readonly from: string
  readonly jobs: ReadonlyArray<NoticeJob>
}

/** A notice's length at most, under PostgreSQL's 8 000-byte payload limit. */
const maxNotice = 7500

const decodeNotice = (payload: string): Notice | undefined => {
  try {
    const notice = JSON.parse(payload) as Notice
    return typeof notice.from === "string" && Array.isArray(notice.jobs) ? notice : undefined
  } catch {
    return undefined
  }
}

/** The jobs' parts packed into as few notices as fit; a job whose events do not fit alone goes without them. */
const packNotices = (from: string, parts: ReadonlyArray<NoticeJob>): Array<string> => {
  const notices: Array<string> = []
  let packed: Array<string> = []
  let length = 0
  const close = () => {
    if (packed.length > 0) notices.push(`{"from":${JSON.stringify(from)},"jobs":[${packed.join(",")}]}`)
    packed = []
    length = 0
  }
  for (const part of parts) {
    let text = JSON.stringify(part)
    if (text.length > maxNotice - 64) text = JSON.stringify({ jobId: part.jobId, last: part.last })
    if (length + text.length > maxNotice - 64) close()
    packed.push(text)
    length += text.length + 1
  }
  close()
  return notices
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.gen(function*() {
  const store = yield* JobStore.JobStore
  const signals = yield* JobSignals.JobSignals
  const clock = yield* Effect.clock
  const self = randomBytes(8).toString("hex")
  // A hub per job with live subscribers here: an event goes only to its job's subscribers (one hub for all
  // had every subscriber's stream filter every job's events, which cost the API most of its CPU at 100 of them).
  const hubs = new Map<string, { readonly hub: PubSub.PubSub<Wake>, subscribers: number }>()
  const handOver = (wakes: ReadonlyArray<Wake>) =>
    Effect.suspend(() => {
      if (hubs.size === 0) return Effect.void
      const byJob = new Map<string, Array<Wake>>()
      for (const wake of wakes) {
        if (!hubs.has(wake.jobId)) continue
        const list = byJob.get(wake.jobId)
        if (list === undefined) byJob.set(wake.jobId, [wake])
        else list.push(wake)
      }
      return Effect.forEach(byJob, ([jobId, list]) => PubSub.publishAll(hubs.get(jobId)!.hub, list), { discard: true })
    })
  const hubOf = (jobId: string) =>
    Effect.acquireRelease(
      Effect.flatMap(PubSub.unbounded<Wake>(), (fresh) =>
        Effect.sync(() => {
          let entry = hubs.get(jobId)
          if (entry === undefined) hubs.set(jobId, entry = { hub: fresh, subscribers: 0 })
          entry.subscribers++
          return entry.hub
        })),
      () =>
        Effect.sync(() => {
          const entry = hubs.get(jobId)!
          if (--entry.subscribers === 0) hubs.delete(jobId)
        })
    )
  let buffer: Array<Pending> = []
  // One flush at a time: two at once could store one job's later events first.
  const lock = yield* Effect.makeSemaphore(1)
  /** Per job, its latest event of each type seen here. */
  const latestSeen = new Map<string, Map<EventType, Event>>()
  const see = (events: ReadonlyArray<Event>) => {
    // A job whose final state this process never heard of (a lost notice) would stay: forget all now and then.
    if (latestSeen.size > 10_000) latestSeen.clear()
    for (const event of events) {
      let byType = latestSeen.get(event.jobId)
      if (byType === undefined) latestSeen.set(event.jobId, byType = new Map())
      const known = byType.get(event.type)
      if (known === undefined || known.seq < event.seq) byType.set(event.type, event)
      // A job's final state: what is kept of it is no longer needed (and a replay starts again from `queued`).
      if (event.type === "state" && Job.isTerminal((JSON.parse(event.data) as { state: Job.JobState }).state)) latestSeen.delete(event.jobId)
    }
  }

  const publish = <T extends EventType>(jobId: string, type: T, data: Job.EventData[T]): Effect.Effect<void> =>
    Effect.sync(() => {
      buffer.push({ jobId, type, data: dataOf(data, clock.unsafeCurrentTimeMillis()) })
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
    const batch = new Map(Array.from(byJob, ([jobId, list]) => [jobId, list.map(({ data, type }) => ({ type, data, at }))]))
    return Effect.gen(function*() {
      const lasts = yield* store.appendEvents(batch)
      const stored: Array<Event> = []
      const parts: Array<NoticeJob> = []
      for (const [jobId, last] of lasts) {
        const list = byJob.get(jobId)!
        const first = last - list.length + 1
        const events = list.map((e, i): Event => ({ jobId, seq: first + i, type: e.type, data: e.data }))
        stored.push(...events)
        parts.push({ jobId, last, events: events.map((e) => [e.seq, e.type, e.data] as const) })
      }
      if (lasts.size < byJob.size) {
        yield* Effect.logWarning(`events of jobs not in the store dropped: ${Array.from(byJob.keys()).filter((id) => !lasts.has(id)).join(", ")}`)
      }
      see(stored)
      yield* handOver(stored)
      // The events go with the notices when they fit, so other processes need not read them back.
      if (signals.shared) yield* Effect.forEach(packNotices(self, parts), (notice) => signals.send("events", notice), { discard: true })
    })
  }))

  yield* flush.pipe(
    Effect.tapErrorCause(Effect.logError),
    Effect.ignore,
    Effect.repeat(Schedule.spaced(flushEvery)),
    Effect.forkScoped
  )
  yield* Effect.addFinalizer(() => Effect.ignore(flush))

  // Other processes' notices, read once here and handed to this process's subscribers.
  if (signals.shared) {
    const notices = yield* signals.subscribe("events")
    yield* Queue.take(notices).pipe(
      Effect.flatMap((payload) => {
        const notice = decodeNotice(payload)
        if (notice === undefined || notice.from === self) return Effect.void
        const wakes: Array<Wake> = []
        for (const part of notice.jobs) {
          if (part.events === undefined) {
            wakes.push({ jobId: part.jobId, last: part.last })
            continue
          }
          const events = part.events.map(([seq, type, data]): Event => ({ jobId: part.jobId, seq, type, data }))
          see(events)
          wakes.push(...events)
        }
        return handOver(wakes)
      }),
      Effect.forever,
      Effect.forkScoped
    )
  }

  // Notices can be lost between processes: every `pollEvery`, one read of the last seq of every job with
  // subscribers here wakes them, and those behind it read what they missed (one read for all of them: a poll
  // per subscriber cost the API a store read per subscriber every 2 s).
  if (signals.shared) {
    yield* Effect.suspend(() =>
      hubs.size === 0
        ? Effect.void
        : Effect.flatMap(store.lastSeqOf(Array.from(hubs.keys())), (lasts) =>
            handOver(Array.from(lasts, ([jobId, last]): Wake => ({ jobId, last }))))
    ).pipe(
      Effect.tapErrorCause(Effect.logWarning),
      Effect.ignore,
      Effect.repeat(Schedule.spaced(pollEvery)),
      Effect.forkScoped
    )
  }

  const follow = (jobId: string, after: number): Effect.Effect<Follower, never, Scope.Scope> =>
    Effect.gen(function*() {
      const live = yield* PubSub.subscribe(yield* hubOf(jobId))
      let sent = after
      let backlogRead = false
      /** What is stored after the last event sent. */
      const stored = Effect.map(store.events(jobId, sent), (events) => {
        const fresh = events.filter((e) => e.seq > sent).map((e): Event => ({ ...e, jobId }))
        if (fresh.length > 0) sent = fresh[fresh.length - 1]!.seq
        return fresh
      })
      /** The wakes' events: each sent as it comes if it is the next one; a gap, or a notice without its events, reads the store. */
      const eventsOf = (wakes: Iterable<Wake>): Effect.Effect<ReadonlyArray<Event>, JobStore.JobStoreError> => {
        const found: Array<Event> = []
        for (const wake of wakes) {
          if (!("seq" in wake)) {
            if (wake.last > sent) return Effect.map(stored, (more) => found.concat(more))
          } else if (wake.seq === sent + 1) {
            sent = wake.seq
            found.push(wake)
          } else if (wake.seq > sent) {
            // Stored before it was handed over, as is every later wake taken with it: one read covers them all.
            return Effect.map(stored, (more) => found.concat(more))
          }
        }
        return Effect.succeed(found)
      }
      const some = (events: ReadonlyArray<Event>): Batch => ({ events, ended: false })
      /** The next wake, or `undefined` if none comes within `within`. */
      const firstWithin = (within: Duration.Duration): Effect.Effect<Wake | undefined> =>
        Duration.isFinite(within)
          ? Effect.timeoutTo(Queue.take(live), { duration: within, onTimeout: () => undefined, onSuccess: (wake) => wake })
          : Queue.take(live)
      const next = (within: Duration.Duration): Effect.Effect<Batch, JobStore.JobStoreError> =>
        Effect.suspend(() => {
          if (!backlogRead) {
            backlogRead = true
            return Effect.flatMap(stored, (events) => events.length > 0 ? Effect.succeed(some(events)) : next(within))
          }
          // Whatever is there already, without a timer; otherwise wait for the first, then take the rest with it.
          const wakes = Effect.flatMap(Queue.takeAll(live), (ready) =>
            Chunk.isNonEmpty(ready) ? Effect.succeed(ready) : Effect.flatMap(firstWithin(within), (wake) =>
              wake === undefined ? Effect.succeed(Chunk.empty<Wake>()) : Effect.map(Queue.takeAll(live), Chunk.prepend(wake))))
          return Effect.flatMap(wakes, (taken) =>
            Chunk.isEmpty(taken)
              ? Effect.succeed(some([]))
              : Effect.flatMap(eventsOf(taken), (events) => events.length > 0 ? Effect.succeed(some(events)) : next(within)))
        })
      return { next }
    })

  const subscribe = (jobId: string, after: number): Stream.Stream<Event, JobStore.JobStoreError> =>
    Stream.unwrapScoped(Effect.map(follow(jobId, after), (follower) =>
      Stream.repeatEffectChunk(Effect.map(follower.next(Duration.infinity), (batch) => Chunk.unsafeFromArray(batch.events)))))

  return {
    publish,
    subscribe,
    follow,
    flush,
    latest: (jobId, type) => latestSeen.get(jobId)?.get(type)
  } satisfies Events
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<JobEvents, never, JobStore.JobStore | JobSignals.JobSignals> = Layer.scoped(JobEvents, make)
