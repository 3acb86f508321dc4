/**
 * A resizable pool of permits with a synchronous fast path, used by
 * `ConcurrencyLimiter` in place of Effect's `Semaphore`.
 *
 * Why not `Semaphore` (whose `resize` has the same semantics): measured on
 * effect 3.22.4, a `take(1)` + `release(1)` pair costs ≈3.5 µs even when
 * permits are free (`asyncInterrupt` plus a fiber-runtime read per call), which
 * made 1 000 000 no-op items take 5.5 s instead of 1.9 s. Here a free permit is
 * taken in one `Effect.suspend`, and only a waiter pays for an `Effect.async`.
 *
 * Each permit is recorded on a `Holder` (an item of a batch) and on the
 * holder's `Ledger` (the batch), at the moment it is granted, so a batch that
 * is interrupted can give back exactly what its items still held, and a
 * waiter interrupted after its grant gives the permit back itself.
 * Waiters are served first-in, first-out.
 *
 * A waiter is a fiber (`take`) or a ticket (`enqueue`): a callback the pool
 * calls once the ticket holds a permit. A batch's workers wait as tickets, so
 * a limit shared by many batches keeps a small object per place in its queue
 * rather than a parked fiber. 200 batches of 100 items on a limit of 128 kept
 * 20 000 fibers waiting; as tickets, they took about a fifth less CPU per item
 * and 60 MB less memory (engine only, setImmediate as the task).
 */
import * as Effect from "effect/Effect"
import type * as LimitAlgorithm from "../LimitAlgorithm.js"

export interface Ledger {
  held: number
  /** Its tickets still waiting. */
  tickets: number
  /** Given back (`releaseLedger`): its tickets still queued are dropped unanswered. */
  closed: boolean
  /**
   * Its idle workers' places in the queue (some since granted or given up), so that `dismissIdle` visits these
   * rather than the whole queue of a limit that many batches share: a scan per batch end made the cost of
   * ending a batch grow with every other batch's waiters (86 ms of CPU for 200 jobs of 50 items on one limit).
   */
  idleWaiters: Array<Waiter>
  /** Length of `idleWaiters` at which its answered places are dropped. */
  idleCompactAt: number
}

/** A batch's ledger, holding nothing yet. */
export const makeLedger = (): Ledger => ({ held: 0, tickets: 0, closed: false, idleWaiters: [], idleCompactAt: idleCompactMin })

const idleCompactMin = 64

/** Notes `waiter`'s place on its ledger if it is an idle worker's (see `dismiss`). */
const noteIdle = (waiter: Waiter): void => {
  if (waiter.holder.idle !== true) return
  const ledger = waiter.holder.ledger
  ledger.idleWaiters.push(waiter)
  if (ledger.idleWaiters.length >= ledger.idleCompactAt) {
    // Amortized: most places were answered long ago (each item's worker waits once per item on a busy limit).
    ledger.idleWaiters = ledger.idleWaiters.filter(live)
    ledger.idleCompactAt = Math.max(idleCompactMin, 2 * ledger.idleWaiters.length)
  }
}

/**
 * What the engine asks of a `ConcurrencyLimiter`: the permits of its items,
 * one per attempt, and the samples of finished attempts. Kept off the
 * limiter's public face (under `permitProtocol`), which offers `withPermit`.
 */
export interface PermitProtocol {
  /** Waits for a permit for `holder` (no-op if it holds one). */
  readonly take: (holder: Holder) => Effect.Effect<void>
  /** Takes a permit for `holder` if one is free now, without waiting; whether it holds one. */
  readonly tryTake: (holder: Holder) => boolean
  /**
   * Queues a ticket for `holder` in place of a waiting fiber: `wake(true)` once it holds a permit, `wake(false)`
   * when dismissed (`dismissIdle`). A ticket of a ledger given back is dropped without a call. Absent where a
   * permit needs more than the pool's grant (a lease from Redis): the caller then waits with `take`.
   */
  readonly enqueue?: ((holder: Holder, priority: number, wake: (granted: boolean) => void) => void) | undefined
  /** Gives `holder`'s permit back (no-op if it holds none). */
  readonly release: (holder: Holder) => Effect.Effect<void>
  /** `release`, done at once (for callers already inside an effect). */
  readonly unsafeRelease: (holder: Holder) => void
  /** Resumes without a permit the idle workers of `ledger` still waiting (its batch has nothing more to run). */
  readonly dismissIdle: (ledger: Ledger) => void
  /** Gives back every permit still recorded on `ledger`, and drops its tickets (for a batch that ended). */
  readonly releaseLedger: (ledger: Ledger) => Effect.Effect<void>
  /** Feeds one finished attempt to the algorithm; the new limit when it moved. */
  readonly record: (sample: LimitAlgorithm.Sample) => Effect.Effect<number | undefined>
  /** Permits taken now. */
  readonly inUse: () => number
}

/** Where a limiter keeps its `PermitProtocol`. */
export const permitProtocol: unique symbol = Symbol.for("effect-batch/ConcurrencyLimiter/permitProtocol")

export interface Holder {
  holding: boolean
  readonly ledger: Ledger
  /** A batch's worker asking for a permit to pull its next item: dismissed when the batch has no more (`dismissIdle`). */
  readonly idle?: boolean
}

/**
 * Resumes, without a permit, the waiters of `ledger` that are idle workers:
 * the batch's input is used up, so they have nothing to run. (Otherwise, on
 * a limit shared by many batches, each would queue behind all the others'
 * items only to find nothing left, and its batch would end that much later.)
 */
const dismiss = (ledger: Ledger): number => {
  const waiters = ledger.idleWaiters
  ledger.idleWaiters = []
  ledger.idleCompactAt = idleCompactMin
  let dismissed = 0
  for (const waiter of waiters) {
    // Answered or given up since it was noted; a dismissed waiter stays in the pool's queue, skipped when reached.
    if (!live(waiter)) continue
    const wake = waiter.wake!
    waiter.wake = undefined
    if (waiter.ticket) ledger.tickets--
    dismissed++
    wake(false)
  }
  return dismissed
}

export interface Waiter {
  readonly holder: Holder
  /** Called once, with whether the waiter holds a permit; `undefined` once called or given up. */
  wake: ((granted: boolean) => void) | undefined
  readonly ticket: boolean
}

/** Whether a queued waiter still waits (it was not interrupted, dismissed, or dropped with its ledger). */
const live = (waiter: Waiter): boolean => waiter.wake !== undefined && !(waiter.ticket && waiter.holder.ledger.closed)

/** Grants `waiter`'s permit (already counted) and wakes it. */
const wakeGranted = (waiter: Waiter): void => {
  const wake = waiter.wake!
  waiter.wake = undefined
  if (waiter.ticket) waiter.holder.ledger.tickets--
  wake(true)
}

/**
 * What both pools share: the count of permits taken against the limit, the
 * grant and the release paths. A subclass says whether anyone waits and what
 * to do once permits are free (`freed`: wake waiters now, or a moment later).
 */
abstract class Permits {
  protected taken = 0

  constructor(protected limit: number) {}

  protected abstract hasWaiters(): boolean
  protected abstract freed(): void

  /** Permits taken now. */
  readonly inUse = (): number => this.taken

  protected grant(holder: Holder): void {
    this.taken++
    holder.holding = true
    holder.ledger.held++
  }

  /** Takes a permit now if one is free and nobody waits; whether `holder` holds one. */
  readonly tryTake = (holder: Holder): boolean => {
    if (holder.holding) return true
    if (this.taken < this.limit && !this.hasWaiters()) {
      this.grant(holder)
      return true
    }
    return false
  }

  readonly releaseNow = (holder: Holder): void => {
    if (!holder.holding) return
    holder.holding = false
    holder.ledger.held--
    this.taken--
    this.freed()
  }

  readonly release = (holder: Holder): Effect.Effect<void> => Effect.sync(() => this.releaseNow(holder))

  /** Gives back permits a ledger still holds (its holders are gone), and drops its tickets. */
  readonly releaseLedger = (ledger: Ledger): Effect.Effect<void> =>
    Effect.sync(() => {
      this.dropTickets(ledger)
      ledger.closed = true
      ledger.tickets = 0
      this.taken -= ledger.held
      ledger.held = 0
      this.freed()
    })

  /** Forgets `ledger`'s tickets still queued (they stay in the queue, skipped when reached). */
  protected dropTickets(_ledger: Ledger): void {}

  readonly resize = (limit: number): Effect.Effect<void> =>
    Effect.sync(() => {
      this.limit = limit
      this.freed()
    })
}

export class PermitPool extends Permits {
  private waiters: Array<Waiter> = []
  private head = 0

  protected hasWaiters(): boolean {
    return this.head < this.waiters.length
  }

  protected freed(): void {
    while (this.taken < this.limit && this.head < this.waiters.length) {
      const waiter = this.waiters[this.head++]!
      if (!live(waiter)) continue // interrupted while waiting, or its batch ended
      this.grant(waiter.holder)
      wakeGranted(waiter)
    }
    if (this.head > 1024 && this.head * 2 > this.waiters.length) {
      this.waiters = this.waiters.slice(this.head)
      this.head = 0
    }
  }

  readonly take = (holder: Holder): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (this.tryTake(holder)) return Effect.void
      return Effect.async<void>((resume) => {
        const waiter: Waiter = { holder, wake: () => resume(Effect.void), ticket: false }
        this.waiters.push(waiter)
        noteIdle(waiter)
        return Effect.sync(() => {
          if (waiter.wake !== undefined) waiter.wake = undefined
          else this.releaseNow(holder) // granted, but the waiter was interrupted before it resumed
        })
      })
    })

  readonly enqueue = (holder: Holder, _priority: number, wake: (granted: boolean) => void): void => {
    holder.ledger.tickets++
    const waiter: Waiter = { holder, wake, ticket: true }
    this.waiters.push(waiter)
    noteIdle(waiter)
  }

  /** See `dismiss`. */
  readonly dismissIdle = (ledger: Ledger): void => {
    dismiss(ledger)
  }
}

interface PrioritizedWaiter extends Waiter {
  readonly since: number
}

interface Bucket {
  waiters: Array<PrioritizedWaiter>
  head: number
}

/**
 * A `PermitPool` whose waiters are served by priority, with aging so that no
 * waiter starves: a waiter's standing is its priority plus one for every
 * `agingMs` it has waited, and the best standing goes first (ties: the
 * longest waiting). Waiters are kept in one FIFO per priority, so serving one
 * compares only the heads — as many as there are distinct priorities waiting.
 * Used where several batches share one limit (the job service's providers).
 *
 * A released permit is handed out a microtask later, not at once: the fiber
 * that released it usually asks again in the same run (a batch's worker going
 * on to its next item), and must be among the waiters when the choice is
 * made — otherwise a permit freed by a high-priority batch would go to
 * whichever batch was already waiting, and priorities would only alternate.
 */
export class PrioritizedPermitPool extends Permits {
  private waiting = 0
  private wakeScheduled = false
  private readonly buckets = new Map<number, Bucket>()

  constructor(limit: number, private readonly agingMs: number, private readonly now: () => number) {
    super(limit)
  }

  protected hasWaiters(): boolean {
    return this.waiting > 0
  }

  protected freed(): void {
    if (this.wakeScheduled) return
    this.wakeScheduled = true
    queueMicrotask(() => {
      this.wakeScheduled = false
      this.wake()
    })
  }

  protected override dropTickets(ledger: Ledger): void {
    this.waiting -= ledger.tickets
  }

  private best(): PrioritizedWaiter | undefined {
    const now = this.now()
    let chosen: Bucket | undefined
    let chosenStanding = -Infinity
    for (const [priority, bucket] of this.buckets) {
      while (bucket.head < bucket.waiters.length && !live(bucket.waiters[bucket.head]!)) bucket.head++
      if (bucket.head === bucket.waiters.length) {
        this.buckets.delete(priority)
        continue
      }
      const standing = priority + (now - bucket.waiters[bucket.head]!.since) / this.agingMs
      if (standing > chosenStanding) {
        chosen = bucket
        chosenStanding = standing
      }
    }
    if (chosen === undefined) return undefined
    const waiter = chosen.waiters[chosen.head++]!
    if (chosen.head > 1024 && chosen.head * 2 > chosen.waiters.length) {
      chosen.waiters = chosen.waiters.slice(chosen.head)
      chosen.head = 0
    }
    return waiter
  }

  private wake(): void {
    while (this.taken < this.limit && this.waiting > 0) {
      const waiter = this.best()
      if (waiter === undefined) {
        this.waiting = 0
        return
      }
      this.waiting--
      this.grant(waiter.holder)
      wakeGranted(waiter)
    }
  }

  private queue(waiter: PrioritizedWaiter, priority: number): void {
    let bucket = this.buckets.get(priority)
    if (bucket === undefined) {
      bucket = { waiters: [], head: 0 }
      this.buckets.set(priority, bucket)
    }
    bucket.waiters.push(waiter)
    this.waiting++
    noteIdle(waiter)
  }

  readonly take = (holder: Holder, priority: number): Effect.Effect<void> =>
    Effect.suspend(() => {
      if (this.tryTake(holder)) return Effect.void
      return Effect.async<void>((resume) => {
        const waiter: PrioritizedWaiter = { holder, wake: () => resume(Effect.void), ticket: false, since: this.now() }
        this.queue(waiter, priority)
        return Effect.sync(() => {
          if (waiter.wake !== undefined) {
            waiter.wake = undefined
            this.waiting--
          } else {
            this.releaseNow(holder)
          }
        })
      })
    })

  readonly enqueue = (holder: Holder, priority: number, wake: (granted: boolean) => void): void => {
    holder.ledger.tickets++
    this.queue({ holder, wake, ticket: true, since: this.now() }, priority)
  }

  /** See `dismiss`. */
  readonly dismissIdle = (ledger: Ledger): void => {
    this.waiting -= dismiss(ledger)
  }
}
