/**
 * Group commit of item outcomes. The chunks (and provider batch runs)
 * running in a process hand each outcome over as it settles (a push, no
 * effect), and one writer stores
 * everything handed over meanwhile in one `JobStore.recordAll` transaction:
 * it wakes on the first outcome, waits for the event loop's next turn (what
 * settles in this one joins the write), then writes. With a hundred chunks
 * running, each settling an item now and then, a statement and a commit per
 * item was what the store cost most (10 200 statements for 10 000 items).
 *
 * What it does not promise: an outcome is stored when the write that took
 * it commits, not when it is handed over; `flushed` waits for that. A crash
 * in between loses it (the item is pending again, and is called again with
 * its idempotency key). A failed write drops the outcomes it held (their
 * items stay pending), and every chunk that handed one over sees its
 * `flushed` fail, so that the workflow retries it rather than finish the job
 * with those items unrecorded.
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as JobStore from "./JobStore.js"

/**
 * Outcomes waiting for a write beyond which handing one over waits for it
 * (backpressure: a store slower than the calls).
 *
 * @since 0.1.0
 * @category constants
 */
export const maxWaiting = 4096

/**
 * @since 0.1.0
 * @category models
 */
export interface OutcomeWriter {
  /**
   * Hands an outcome over: `undefined`, or, when `maxWaiting` outcomes wait
   * to be written, an effect that waits for their write.
   */
  readonly add: (jobId: string, outcome: JobStore.Outcome) => Effect.Effect<void> | undefined
  /** The write outcomes handed over from now on go into: `flushed`'s `since`. */
  readonly current: () => number
  /**
   * Waits until every outcome of the job handed over so far is stored; fails
   * if a write since `since` dropped some of them.
   */
  readonly flushed: (jobId: string, since: number) => Effect.Effect<void, JobStore.JobStoreError>
  /** Forgets a job's failed writes (it has ended). */
  readonly forget: (jobId: string) => void
}

/** The outcomes gathered for one write, by job; `written` once it ended (how: `lostIn`). */
interface Round {
  readonly seq: number
  readonly groups: Map<string, Array<JobStore.Outcome>>
  size: number
  readonly written: Deferred.Deferred<void>
}

/** Until the event loop's next turn: the answers that arrived meanwhile settle their items first. */
const nextTurn = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/**
 * A writer on `store`, its fiber in the scope; what is gathered when the
 * scope closes is written then.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (store: JobStore.Store, now: () => number): Effect.Effect<OutcomeWriter, never, Scope.Scope> =>
  Effect.gen(function*() {
    let seq = 0
    const newRound = (): Round => ({ seq: seq++, groups: new Map(), size: 0, written: Deferred.unsafeMake(FiberId.none) })
    let gathering = newRound()
    let writing: Round | undefined
    let wake = Deferred.unsafeMake<void>(FiberId.none)
    /** The last write that failed holding a job's outcomes. */
    const lostIn = new Map<string, { readonly seq: number, readonly error: JobStore.JobStoreError }>()

    const take = () => {
      const round = gathering
      gathering = newRound()
      wake = Deferred.unsafeMake(FiberId.none)
      return round
    }
    const write = (round: Round) =>
      Effect.suspend(() => {
        writing = round
        return store.recordAll(Array.from(round.groups, ([jobId, outcomes]) => ({ jobId, outcomes })), now()).pipe(
          Effect.exit,
          Effect.flatMap((exit) => {
            writing = undefined
            if (Exit.isFailure(exit)) {
              // A defect too: the chunks waiting must fail (and be retried), not die.
              const error = Option.getOrElse(
                Cause.failureOption(exit.cause),
                () => new JobStore.JobStoreError({ operation: "record", cause: Cause.squash(exit.cause) })
              )
              for (const jobId of round.groups.keys()) lostIn.set(jobId, { seq: round.seq, error })
            }
            return Deferred.done(round.written, Exit.void)
          }),
          Effect.uninterruptible
        )
      })

    yield* Effect.addFinalizer(() => gathering.size === 0 ? Effect.void : write(take()))
    yield* Effect.suspend(() => Deferred.await(wake)).pipe(
      Effect.zipRight(nextTurn),
      Effect.flatMap(() => write(take())),
      Effect.forever,
      Effect.forkScoped
    )

    const lostSince = (jobId: string, since: number) => {
      const lost = lostIn.get(jobId)
      return lost !== undefined && lost.seq >= since ? Effect.fail(lost.error) : Effect.void
    }

    return {
      add: (jobId, outcome) => {
        const round = gathering
        let outcomes = round.groups.get(jobId)
        if (outcomes === undefined) round.groups.set(jobId, outcomes = [])
        outcomes.push(outcome)
        if (round.size++ === 0) Deferred.unsafeDone(wake, Exit.void)
        return round.size >= maxWaiting ? Deferred.await(round.written) : undefined
      },
      current: () => gathering.seq,
      flushed: (jobId, since) =>
        Effect.suspend(() => {
          const round = gathering.groups.has(jobId) ? gathering : writing?.groups.has(jobId) ? writing : undefined
          return round === undefined
            ? lostSince(jobId, since)
            : Effect.zipRight(Deferred.await(round.written), Effect.suspend(() => lostSince(jobId, since)))
        }),
      forget: (jobId) => {
        lostIn.delete(jobId)
      }
    } satisfies OutcomeWriter
  })
