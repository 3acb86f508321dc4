/**
 * Where the job service keeps its jobs: each job's definition, its items and
 * their outcomes, and the events its subscribers were sent. `Store` is the
 * narrow contract; `layerMemory` keeps it in memory (tests, one process),
 * `SqlJobStore.layer` in SQL (SQLite or PostgreSQL). One conformance suite
 * runs against every backend.
 *
 * An item's outcome is kept with the item: it is pending until it settles,
 * then `succeeded`, `failed` or `skipped`, with an output of that status's
 * shape (`Job.Completion`, `Job.Failure`, `Job.Skip`). That makes results in
 * input order, counts and dead letters plain reads, and lets a chunk that
 * runs again after a crash pick exactly the items still pending.
 *
 * A job moves between states only as `Job.transitions` allows: `setState`
 * and `reopenFailed` check the move and make it in one atomic step, in every
 * backend. An idempotency key is unique per tenant: inserts racing with one
 * key make one job, whatever the backend.
 *
 * What it does not promise: the store does not know whether a job's workflow
 * is running (the workflow engine's journal is elsewhere). Every method fails
 * with a `JobStoreError` (the backend's error as cause) — callers treat it as
 * a defect of the service.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Predicate from "effect/Predicate"
import type * as BatchReport from "../BatchReport.js"
import * as Job from "./Job.js"

/**
 * @since 0.1.0
 * @category errors
 */
export class JobStoreError extends Data.TaggedError("JobStoreError")<{
  readonly operation: string
  readonly cause: unknown
}> {
  override get message(): string {
    const cause = Predicate.hasProperty(this.cause, "message") && typeof this.cause.message === "string"
      ? this.cause.message
      : String(this.cause)
    return `JobStore.${this.operation} failed: ${cause}`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface JobRow {
  readonly id: string
  readonly tenant: string
  readonly idempotencyKey: string | undefined
  /**
   * The SHA-256 of the canonical JSON of the submitted payload, to tell a
   * retry from another request under the same key; `undefined` for a job
   * stored before it was kept.
   */
  readonly payloadHash: string | undefined
  readonly state: Job.JobState
  readonly reason: string | undefined
  readonly profile: string
  readonly model: string
  readonly priority: number
  readonly spec: Job.Spec
  readonly metadata: Job.Metadata
  readonly total: number
  readonly round: number
  readonly createdAt: number
  readonly startedAt: number | undefined
  readonly finishedAt: number | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Totals extends Job.Counts {
  readonly cost: number
  readonly tokens: number
}

/**
 * A job without items: nothing counted.
 *
 * @since 0.2.0
 * @category constants
 */
export const noTotals: Totals = { succeeded: 0, failed: 0, skipped: 0, pending: 0, total: 0, cost: 0, tokens: 0 }

/**
 * @since 0.1.0
 * @category models
 */
export type OutcomeStatus = "succeeded" | "failed" | "skipped"

/**
 * An item's outcome, as the runner records it: its output has the shape of
 * its status.
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome =
  & {
    readonly index: number
    readonly attempts: number
    readonly durationMs: number
    readonly cost: number
    readonly tokens: number
  }
  & (
    | { readonly status: "succeeded", readonly output: Job.Completion }
    | { readonly status: "failed", readonly output: Job.Failure, readonly errorClass: string }
    | { readonly status: "skipped", readonly output: Job.Skip }
  )

/**
 * Outcomes of one job's items, as `recordAll` takes them.
 *
 * @since 0.1.0
 * @category models
 */
export interface OutcomeGroup {
  readonly jobId: string
  readonly outcomes: ReadonlyArray<Outcome>
}

/**
 * An item as submitted: its input, or, for an input line that could not be
 * read, the line's text and why.
 *
 * @since 0.1.0
 * @category models
 */
export interface NewItem {
  readonly input: Job.ItemInput
  /** `file:line: what was wrong` */
  readonly rejected?: string | undefined
}

/**
 * The error class of items refused at submission.
 *
 * @since 0.1.0
 * @category models
 */
export const rejectedClass = "Rejected"

/**
 * A settled item with its input, as results read it.
 *
 * @since 0.1.0
 * @category models
 */
export type SettledItem = Outcome & { readonly input: Job.ItemInput }

/**
 * A failed item with its input, as dead letters read it.
 *
 * @since 0.1.0
 * @category models
 */
export type DeadLetter = Extract<SettledItem, { readonly status: "failed" }>

/**
 * An event of a job, as stored: `data` is the JSON text subscribers are sent.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoredEvent {
  readonly seq: number
  readonly type: Job.EventType
  readonly data: string
}

/**
 * An event to append; the store numbers it.
 *
 * @since 0.1.0
 * @category models
 */
export interface NewEvent {
  readonly type: Job.EventType
  readonly data: string
  /** When it is stored (ms since the epoch). */
  readonly at: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Store {
  /**
   * Inserts the job, `queued`, and its items in one atomic step (a rejected
   * item is stored failed, with class `Rejected`, and is never run or
   * replayed); with an idempotency key the tenant used before, inserts
   * nothing and returns that job instead (`created: false`), whatever its
   * `payloadHash`: the caller judges. Two inserts with one key at once make
   * one job, and the other gets that job. `events` are the new job's first
   * events, numbered from 1 and stored in the same step (none for a job
   * found by its key).
   */
  readonly insert: (
    job: Omit<JobRow, "startedAt" | "finishedAt" | "reason" | "round" | "state">,
    items: ReadonlyArray<NewItem>,
    events?: ReadonlyArray<NewEvent>
  ) => Effect.Effect<{ readonly job: JobRow, readonly created: boolean }, JobStoreError>
  /** The job, if it exists and (when `tenant` is given) belongs to `tenant`. */
  readonly get: (id: string, tenant?: string) => Effect.Effect<JobRow | undefined, JobStoreError>
  /** The state of each of the jobs that exist, by id, in one read (a runner's progress tick reads all it runs). */
  readonly statesOf: (ids: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, Job.JobState>, JobStoreError>
  /** Newest first (`createdAt`, then `id`, descending); `before` is the `createdAt`/`id` of the last job of the previous page. */
  readonly list: (query: {
    readonly tenant: string
    readonly state?: Job.JobState | undefined
    readonly limit: number
    readonly before?: { readonly createdAt: number, readonly id: string } | undefined
  }) => Effect.Effect<ReadonlyArray<JobRow>, JobStoreError>
  /**
   * Moves the job to `state` if `Job.transitions` allows the move from the
   * state it is in, atomically (a move the table refuses changes nothing);
   * whether it moved. `reason` replaces the job's reason; a move to
   * `running` sets `startedAt` the first time, a move to a final state sets
   * `finishedAt`, any other clears it.
   */
  readonly setState: (
    id: string,
    state: Job.JobState,
    options: {
      readonly reason?: string | undefined
      readonly now: number
    }
  ) => Effect.Effect<boolean, JobStoreError>
  /** Items `from` ≤ index < `to` not settled yet, in order. */
  readonly pending: (
    id: string,
    from: number,
    to: number
  ) => Effect.Effect<ReadonlyArray<{ readonly index: number, readonly input: Job.ItemInput }>, JobStoreError>
  /**
   * Every item of `[from, to)`, settled or not, in index order: what a run
   * that must see the whole job (a provider batch run, whose line names are
   * item positions) takes.
   */
  readonly inputs: (
    id: string,
    from: number,
    to: number
  ) => Effect.Effect<ReadonlyArray<{ readonly index: number, readonly input: Job.ItemInput, readonly pending: boolean }>, JobStoreError>
  /** Records outcomes (of items of the job; others are ignored) in one atomic step. */
  readonly record: (id: string, outcomes: ReadonlyArray<Outcome>, now: number) => Effect.Effect<void, JobStoreError>
  /**
   * Records the outcomes of several jobs in one atomic step: a group commit
   * of what every job running in a process settled meanwhile (`OutcomeWriter`).
   */
  readonly recordAll: (groups: ReadonlyArray<OutcomeGroup>, now: number) => Effect.Effect<void, JobStoreError>
  /** Counts by status, and cost and tokens summed over every item (a reopened item keeps its last attempt's). */
  readonly totals: (id: string) => Effect.Effect<Totals, JobStoreError>
  /** `totals` of several jobs in one read, by id (a job not in the store has none): what a list of jobs shows. */
  readonly totalsOf: (ids: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, Totals>, JobStoreError>
  /** Settled items with index > `after`, in order, at most `limit`. */
  readonly settled: (id: string, after: number, limit: number) => Effect.Effect<ReadonlyArray<SettledItem>, JobStoreError>
  /** Failed items, in order. */
  readonly deadLetters: (id: string) => Effect.Effect<ReadonlyArray<DeadLetter>, JobStoreError>
  /** Records every item still pending as `skipped` with `reason`; how many. */
  readonly skipPending: (id: string, reason: string, now: number) => Effect.Effect<number, JobStoreError>
  /**
   * Marks failed items pending again (never `Rejected` ones) and, if there
   * were any, counts a round and moves the job to `queued` (clearing its
   * reason and `finishedAt`); how many. Only a job the table lets move to
   * `queued` (one that ended) is reopened: for any other, nothing changes
   * and the answer is 0.
   */
  readonly reopenFailed: (id: string, now: number) => Effect.Effect<number, JobStoreError>
  /**
   * Appends events of several jobs in one step, each job's numbered after
   * its last one: processes appending to one job at once get distinct,
   * gapless numbers. The last seq of each job (its last seq already if it
   * got none); a job not in the store is left out, its events dropped.
   */
  readonly appendEvents: (
    events: ReadonlyMap<string, ReadonlyArray<NewEvent>>
  ) => Effect.Effect<ReadonlyMap<string, number>, JobStoreError>
  /** Events with seq > `after`, in order. */
  readonly events: (id: string, after: number) => Effect.Effect<ReadonlyArray<StoredEvent>, JobStoreError>
  /** The highest `seq` of the job's events, 0 if none. */
  readonly lastSeq: (id: string) => Effect.Effect<number, JobStoreError>
  /** `lastSeq` of several jobs in one read, by id (a job without events is absent). */
  readonly lastSeqOf: (ids: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, number>, JobStoreError>
  /** Each job's last event of `type`, in one read, by id (a job with none is absent). */
  readonly lastEventOf: (
    ids: ReadonlyArray<string>,
    type: Job.EventType
  ) => Effect.Effect<ReadonlyMap<string, StoredEvent>, JobStoreError>
  /** Jobs queued or running, oldest first: after a restart, the ones the service looks after again. */
  readonly unfinished: Effect.Effect<ReadonlyArray<JobRow>, JobStoreError>
  /** Jobs by state, of every tenant, and the items of queued and running jobs still to run (what `/metrics` shows). */
  readonly census: Effect.Effect<Census, JobStoreError>
  /** Adds a run's `BatchReport.timeSpent` (one chunk's) to the job's, atomically. */
  readonly addTimeSpent: (id: string, spent: TimeSpent) => Effect.Effect<void, JobStoreError>
  /** Where the job's items' time went so far, summed over its chunks; `undefined` before any chunk ended. */
  readonly timeSpent: (id: string) => Effect.Effect<TimeSpent | undefined, JobStoreError>
  /** `timeSpent` of several jobs in one read, by id (a job with none kept is absent). */
  readonly timeSpentOf: (ids: ReadonlyArray<string>) => Effect.Effect<ReadonlyMap<string, TimeSpent>, JobStoreError>
}

/**
 * @since 0.2.0
 * @category models
 */
export type TimeSpent = BatchReport.BatchReport["timeSpent"]

/**
 * @since 0.2.0
 * @category models
 */
export interface Census {
  readonly jobs: Readonly<Record<Job.JobState, number>>
  readonly pendingItems: number
}

/**
 * No job in any state.
 *
 * @since 0.2.0
 * @category constructors
 */
export const emptyCensus = (): Record<Job.JobState, number> =>
  Object.fromEntries(Job.JobState.literals.map((state) => [state, 0])) as Record<Job.JobState, number>

/**
 * @since 0.1.0
 * @category tags
 */
export class JobStore extends Context.Tag("effect-batch/JobStore")<JobStore, Store>() {}

/**
 * The output a rejected item is stored with.
 *
 * @since 0.1.0
 * @category models
 */
export const rejectedOutput = (rejected: string): Job.Failure => ({ class: rejectedClass, message: rejected })

// ---------------------------------------------------------------------------
// memory
// ---------------------------------------------------------------------------

interface MemoryItem {
  readonly input: Job.ItemInput
  /** The outcome while settled; a reopened item keeps its numbers (as the SQL store keeps its columns). */
  settled: Outcome | undefined
  attempts: number
  durationMs: number
  cost: number
  tokens: number
}

interface MemoryJob {
  job: JobRow
  readonly items: Array<MemoryItem>
  readonly events: Array<StoredEvent>
}

const newest = (a: JobRow, b: JobRow) => b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)

/**
 * A store in memory, lost with the process. It behaves as the SQL store
 * does, down to what a reopened item keeps; each call is atomic (it runs
 * without yielding).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory: Effect.Effect<Store> = Effect.sync(() => {
  const jobs = new Map<string, MemoryJob>()
  const times = new Map<string, TimeSpent>()
  const fail = (operation: string, message: string) => Effect.fail(new JobStoreError({ operation, cause: new Error(message) }))
  const settledOf = (item: MemoryItem, index: number): SettledItem | undefined =>
    item.settled === undefined ? undefined : { ...item.settled, index, input: item.input }

  const insert: Store["insert"] = (job, items, events = []) =>
    Effect.suspend((): Effect.Effect<{ readonly job: JobRow, readonly created: boolean }, JobStoreError> => {
      if (job.idempotencyKey !== undefined) {
        for (const { job: existing } of jobs.values()) {
          if (existing.tenant === job.tenant && existing.idempotencyKey === job.idempotencyKey) {
            return Effect.succeed({ job: existing, created: false })
          }
        }
      }
      if (jobs.has(job.id)) return fail("insert", `a job ${job.id} exists already`)
      const row: JobRow = { ...job, state: "queued", reason: undefined, round: 0, startedAt: undefined, finishedAt: undefined }
      jobs.set(job.id, {
        job: row,
        items: items.map((item, index) => ({
          input: item.input,
          settled: item.rejected === undefined ? undefined : {
            index,
            status: "failed",
            output: rejectedOutput(item.rejected),
            errorClass: rejectedClass,
            attempts: 0,
            durationMs: 0,
            cost: 0,
            tokens: 0
          },
          attempts: 0,
          durationMs: 0,
          cost: 0,
          tokens: 0
        })),
        events: events.map(({ data, type }, i) => ({ seq: i + 1, type, data }))
      })
      return Effect.succeed({ job: row, created: true })
    })

  const setState: Store["setState"] = (id, state, { now, reason }) =>
    Effect.sync(() => {
      const entry = jobs.get(id)
      if (entry === undefined || !Job.canMove(entry.job.state, state)) return false
      entry.job = {
        ...entry.job,
        state,
        reason,
        startedAt: state === "running" ? entry.job.startedAt ?? now : entry.job.startedAt,
        finishedAt: Job.isTerminal(state) ? now : undefined
      }
      return true
    })

  const recordAll: Store["recordAll"] = (groups) =>
    Effect.sync(() => {
      for (const { jobId, outcomes } of groups) {
        const items = jobs.get(jobId)?.items
        if (items === undefined) continue
        for (const outcome of outcomes) {
          const item = items[outcome.index]
          if (item === undefined) continue
          item.settled = outcome
          item.attempts = outcome.attempts
          item.durationMs = outcome.durationMs
          item.cost = outcome.cost
          item.tokens = outcome.tokens
        }
      }
    })
  const record: Store["record"] = (id, outcomes, now) => recordAll([{ jobId: id, outcomes }], now)

  const totalsNow = (items: ReadonlyArray<MemoryItem>): Totals => {
    const by = { succeeded: 0, failed: 0, skipped: 0, pending: 0 }
    let cost = 0
    let tokens = 0
    for (const item of items) {
      by[item.settled?.status ?? "pending"]++
      cost += item.cost
      tokens += item.tokens
    }
    return { ...by, total: by.succeeded + by.failed + by.skipped + by.pending, cost, tokens }
  }
  const totals: Store["totals"] = (id) => Effect.sync(() => totalsNow(jobs.get(id)?.items ?? []))
  /** What `f` finds for each id, by id (an id it finds nothing for is absent). */
  const byIds = <A>(ids: ReadonlyArray<string>, f: (id: string) => A | undefined) =>
    Effect.sync(() => {
      const found = new Map<string, A>()
      for (const id of ids) {
        const value = f(id)
        if (value !== undefined) found.set(id, value)
      }
      return found
    })
  const statesOf: Store["statesOf"] = (ids) => byIds(ids, (id) => jobs.get(id)?.job.state)
  const totalsOf: Store["totalsOf"] = (ids) =>
    byIds(ids, (id) => {
      const job = jobs.get(id)
      return job === undefined ? undefined : totalsNow(job.items)
    })

  const skipPending: Store["skipPending"] = (id, reason) =>
    Effect.sync(() => {
      let skipped = 0
      for (const [index, item] of (jobs.get(id)?.items ?? []).entries()) {
        if (item.settled !== undefined) continue
        const { attempts, cost, durationMs, tokens } = item
        item.settled = { index, status: "skipped", output: { reason }, attempts, durationMs, cost, tokens }
        skipped++
      }
      return skipped
    })

  const reopenFailed: Store["reopenFailed"] = (id) =>
    Effect.sync(() => {
      const entry = jobs.get(id)
      if (entry === undefined || !Job.canMove(entry.job.state, "queued")) return 0
      let reopened = 0
      for (const item of entry.items) {
        if (item.settled?.status === "failed" && item.settled.errorClass !== rejectedClass) {
          item.settled = undefined
          reopened++
        }
      }
      if (reopened > 0) {
        entry.job = { ...entry.job, round: entry.job.round + 1, state: "queued", reason: undefined, finishedAt: undefined }
      }
      return reopened
    })

  const appendEvents: Store["appendEvents"] = (batch) =>
    Effect.sync(() => {
      const lasts = new Map<string, number>()
      for (const [id, events] of batch) {
        const entry = jobs.get(id)
        if (entry === undefined) continue
        let seq = entry.events.at(-1)?.seq ?? 0
        for (const { data, type } of events) entry.events.push({ seq: ++seq, type, data })
        lasts.set(id, seq)
      }
      return lasts
    })

  return {
    insert,
    get: (id, tenant) =>
      Effect.sync(() => {
        const job = jobs.get(id)?.job
        return job === undefined || (tenant !== undefined && job.tenant !== tenant) ? undefined : job
      }),
    statesOf,
    list: ({ before, limit, state, tenant }) =>
      Effect.sync(() =>
        Array.from(jobs.values(), (entry) => entry.job)
          .filter((job) =>
            job.tenant === tenant && (state === undefined || job.state === state) &&
            (before === undefined || job.createdAt < before.createdAt || (job.createdAt === before.createdAt && job.id < before.id))
          )
          .sort(newest)
          .slice(0, limit)
      ),
    setState,
    pending: (id, from, to) =>
      Effect.sync(() =>
        (jobs.get(id)?.items ?? []).slice(Math.max(0, from), Math.max(0, to)).flatMap((item, i) =>
          item.settled === undefined ? [{ index: Math.max(0, from) + i, input: item.input }] : []
        )
      ),
    inputs: (id, from, to) =>
      Effect.sync(() =>
        (jobs.get(id)?.items ?? []).slice(Math.max(0, from), Math.max(0, to)).map((item, i) => ({
          index: Math.max(0, from) + i,
          input: item.input,
          pending: item.settled === undefined
        }))
      ),
    record,
    recordAll,
    totals,
    totalsOf,
    settled: (id, after, limit) =>
      Effect.sync(() => {
        const found: Array<SettledItem> = []
        const items = jobs.get(id)?.items ?? []
        for (let index = Math.max(0, after + 1); index < items.length && found.length < limit; index++) {
          const settled = settledOf(items[index]!, index)
          if (settled !== undefined) found.push(settled)
        }
        return found
      }),
    deadLetters: (id) =>
      Effect.sync(() =>
        (jobs.get(id)?.items ?? []).flatMap((item, index) => {
          const settled = settledOf(item, index)
          return settled?.status === "failed" ? [settled] : []
        })
      ),
    skipPending,
    reopenFailed,
    appendEvents,
    events: (id, after) => Effect.sync(() => (jobs.get(id)?.events ?? []).filter((e) => e.seq > after)),
    lastSeq: (id) => Effect.sync(() => (jobs.get(id)?.events ?? []).reduce((max, e) => Math.max(max, e.seq), 0)),
    lastSeqOf: (ids) => byIds(ids, (id) => jobs.get(id)?.events.at(-1)?.seq),
    lastEventOf: (ids, type) => byIds(ids, (id) => (jobs.get(id)?.events ?? []).filter((e) => e.type === type).at(-1)),
    unfinished: Effect.sync(() =>
      Array.from(jobs.values(), (entry) => entry.job)
        .filter((job) => !Job.isTerminal(job.state))
        .sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    ),
    addTimeSpent: (id, spent) =>
      Effect.sync(() => {
        const before = times.get(id)
        times.set(id, before === undefined ? { ...spent } : {
          items: before.items + spent.items,
          queuedMs: before.queuedMs + spent.queuedMs,
          rateLimitMs: before.rateLimitMs + spent.rateLimitMs,
          gateMs: before.gateMs + spent.gateMs,
          inFlightMs: before.inFlightMs + spent.inFlightMs,
          backoffMs: before.backoffMs + spent.backoffMs,
          wallMs: before.wallMs + spent.wallMs
        })
      }),
    timeSpent: (id) => Effect.sync(() => times.get(id)),
    timeSpentOf: (ids) => byIds(ids, (id) => times.get(id)),
    census: Effect.sync(() => {
      const jobsBy = emptyCensus()
      let pendingItems = 0
      for (const { items, job } of jobs.values()) {
        jobsBy[job.state]++
        if (!Job.isTerminal(job.state)) for (const item of items) if (item.settled === undefined) pendingItems++
      }
      return { jobs: jobsBy, pendingItems }
    })
  }
})

/**
 * A store in memory (see `makeMemory`); each build is a new, empty store.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory: Layer.Layer<JobStore> = Layer.effect(JobStore, makeMemory)
