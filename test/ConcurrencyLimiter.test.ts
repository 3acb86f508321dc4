/**
 * The prioritized limiter (jobs sharing a provider): waiting permit requests
 * are served by priority, with aging so that none starves; free permits go
 * at once whatever the priority; and batches run at a priority share it.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, type Duration, Effect, Exit, Fiber, Option, Supervisor, TestClock } from "effect"
import * as Batch from "../src/Batch.js"
import * as ConcurrencyLimiter from "../src/ConcurrencyLimiter.js"
import * as LimitAlgorithm from "../src/LimitAlgorithm.js"
import { makeLedger, permitProtocol } from "../src/internal/permitPool.js"
import * as TaskError from "../src/TaskError.js"
import { recordingAlgorithm } from "./support/recordingAlgorithm.js"

/** Holds one permit of `limiter` until the returned effect is run. */
const occupy = (limiter: ConcurrencyLimiter.Limiter, priority = 0) =>
  Effect.gen(function*() {
    const release = yield* Deferred.make<void>()
    const granted = yield* Deferred.make<void>()
    const fiber = yield* Effect.fork(ConcurrencyLimiter.withPriority(
      limiter.withPermit(Effect.zipRight(Deferred.succeed(granted, undefined), Deferred.await(release))),
      priority
    ))
    yield* Deferred.await(granted)
    return Effect.zipRight(Deferred.succeed(release, undefined), Fiber.join(fiber))
  })

/** Forks a request for a permit at `priority` that notes `name` in `order` when granted, then gives the permit back. */
const waiter = (limiter: ConcurrencyLimiter.Limiter, order: Array<string>) => (name: string, priority: number) =>
  Effect.fork(ConcurrencyLimiter.withPriority(limiter.withPermit(Effect.sync(() => order.push(name))), priority))

describe("ConcurrencyLimiter.makePrioritized", () => {
  it.effect("waiters go by priority, then by arrival", () =>
    Effect.gen(function*() {
      const limiter = yield* ConcurrencyLimiter.makePrioritized(LimitAlgorithm.fixed(1), { aging: "1 hour" })
      const release = yield* occupy(limiter)
      const order: Array<string> = []
      const wait = waiter(limiter, order)
      const fibers = [yield* wait("low-1", 0), yield* wait("high-1", 5), yield* wait("low-2", 0), yield* wait("high-2", 5), yield* wait("mid", 2)]
      yield* Effect.yieldNow()
      expect(order).toEqual([])
      yield* release
      for (const fiber of fibers) yield* Fiber.join(fiber)
      expect(order).toEqual(["high-1", "high-2", "mid", "low-1", "low-2"])
    }))

  it.effect("a waiter gains one priority per aging period: an old low-priority request beats a fresh high one", () =>
    Effect.gen(function*() {
      const limiter = yield* ConcurrencyLimiter.makePrioritized(LimitAlgorithm.fixed(1), { aging: "1 second" })
      const release = yield* occupy(limiter)
      const order: Array<string> = []
      const wait = waiter(limiter, order)
      const old = yield* wait("old, priority 0", 0)
      yield* Effect.yieldNow()
      yield* TestClock.adjust("3500 millis") // standing 3.5
      const fresh = yield* wait("fresh, priority 3", 3) // standing 3
      yield* Effect.yieldNow()
      yield* release
      yield* Fiber.join(old)
      yield* Fiber.join(fresh)
      expect(order).toEqual(["old, priority 0", "fresh, priority 3"])
    }))

  it.effect("a free permit is taken at once, whatever the priority; interrupted waiters give nothing away", () =>
    Effect.gen(function*() {
      const limiter = yield* ConcurrencyLimiter.makePrioritized(LimitAlgorithm.fixed(2))
      // Granted at once at the lowest priority: `occupy` returns only once its permit is held.
      const releaseA = yield* occupy(limiter, -10)
      yield* occupy(limiter)
      const waiting = yield* Effect.fork(limiter.withPermit(Effect.void))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(waiting)
      yield* releaseA
      // One permit is free again, not two: the interrupted waiter took none with it.
      yield* occupy(limiter, -10)
      const third = yield* Effect.fork(limiter.withPermit(Effect.void))
      yield* Effect.yieldNow()
      expect(Option.isNone(yield* Fiber.poll(third))).toBe(true)
      yield* Fiber.interrupt(third)
    }))

  const twoBatches = (aging: Duration.DurationInput) =>
    Effect.gen(function*() {
      const limiter = yield* ConcurrencyLimiter.makePrioritized(LimitAlgorithm.fixed(2), { aging })
      const done: Array<string> = []
      const batch = (name: string, priority: number) =>
        Batch.run(Array.from({ length: 40 }, (_, i) => i), (i) =>
          Effect.as(Effect.sleep("100 millis"), i).pipe(Effect.tap(() => Effect.sync(() => done.push(name)))))
          .pipe(Effect.provideService(ConcurrencyLimiter.ConcurrencyLimiter, limiter), ConcurrencyLimiter.withPriority(priority))
      const low = yield* Effect.fork(batch("low", 0))
      yield* Effect.yieldNow()
      const high = yield* Effect.fork(batch("high", 5))
      for (let i = 0; i < 60; i++) {
        yield* TestClock.adjust("100 millis")
        yield* Effect.yieldNow()
      }
      yield* Fiber.join(high)
      yield* Fiber.join(low)
      const highEnds = done.lastIndexOf("high")
      return { lowBeforeHighEnds: done.slice(0, highEnds).filter((name) => name === "low").length, lowLast: done[done.length - 1] }
    })

  it.effect("two batches on one limiter: the high-priority one takes every permit freed while it waits", () =>
    Effect.gen(function*() {
      // Aging far slower than the run: low keeps only the two permits it held before high arrived.
      const { lowBeforeHighEnds, lowLast } = yield* twoBatches("1 hour")
      expect(lowBeforeHighEnds).toBe(2)
      expect(lowLast).toBe("low")
    }))

  it.effect("two batches on one limiter: with aging, the low-priority one still makes progress meanwhile", () =>
    Effect.gen(function*() {
      // A waiting low request gains 5 levels in a second: each of its workers gets a permit now and then.
      const { lowBeforeHighEnds, lowLast } = yield* twoBatches("200 millis")
      expect(lowBeforeHighEnds).toBeGreaterThan(2)
      expect(lowLast).toBe("low")
    }))
})

describe("batches sharing one limiter", () => {
  for (const [name, make, items] of [
    // 3 items on 3 workers: with `make` (first come, first served) this case passes even without dismissal, as no
    // worker is left waiting without an item; with `makePrioritized` it fails without it. The 150-item cases need it on both.
    ["make", ConcurrencyLimiter.make, 3],
    // 150 items on 64 workers: its workers wait about 150 times, so the places kept for dismissal are pruned as it runs,
    // and 63 are left without an item at its end.
    ["make", ConcurrencyLimiter.make, 150],
    ["makePrioritized", ConcurrencyLimiter.makePrioritized, 3],
    ["makePrioritized", ConcurrencyLimiter.makePrioritized, 150]
  ] as const) {
    it.effect(`${name}: a batch of ${items} ends when its last item does, not when the workers it no longer needs get through the queue`, () =>
      Effect.gen(function*() {
        // The limit stays at 2, but up to 64 workers per batch may wait for it.
        const limiter = yield* make(recordingAlgorithm({ min: 2, max: 64, initial: 2 }).algorithm)
        const shared = Effect.provideService(ConcurrencyLimiter.ConcurrencyLimiter, limiter)
        // Busy for longer than the batch: the batch's workers left without an item would wait behind busy's.
        const busy = yield* Effect.fork(shared(Batch.run(Array.from({ length: 400 }, (_, i) => i), () => Effect.sleep("100 millis"))))
        yield* Effect.yieldNow()
        let lastItemAt = 0
        const batch = yield* Effect.fork(shared(Batch.run(Array.from({ length: items }, (_, i) => i), () =>
          Effect.zipRight(Effect.sleep("100 millis"), Effect.flatMap(Clock.currentTimeMillis, (t) => Effect.sync(() => void (lastItemAt = t)))))).pipe(
          Effect.zipRight(Clock.currentTimeMillis)
        ))
        for (let i = 0; i < 300; i++) {
          yield* TestClock.adjust("100 millis")
          yield* Effect.yieldNow()
        }
        const endedAt = yield* Fiber.join(batch)
        yield* Fiber.join(busy)
        expect(lastItemAt).toBeGreaterThan(0)
        expect(endedAt).toBe(lastItemAt)
      }))
  }
  for (const [name, make] of [["make", ConcurrencyLimiter.make], ["makePrioritized", ConcurrencyLimiter.makePrioritized]] as const) {
    it.effect(`${name}: dismissing a batch's idle workers wakes every one still queued, however many it queued, and no other`, () =>
      Effect.gen(function*() {
        const limiter = yield* make(LimitAlgorithm.fixed(1))
        const protocol = limiter[permitProtocol]
        const release = yield* occupy(limiter)
        const batch = makeLedger()
        const other = makeLedger()
        const woken: Array<string> = []
        const queue = (ledger: typeof batch, label: string, idle: boolean) => {
          const holder = { holding: false, ledger, idle }
          protocol.enqueue!(holder, 0, (granted) => woken.push(`${label} ${granted}`))
          return holder
        }
        // More than the batch's places are pruned at (64): all still wait, so pruning must keep them all.
        for (let i = 0; i < 150; i++) queue(batch, `batch ${i}`, true)
        const otherHolder = queue(other, "other", true)
        queue(batch, "busy", false)
        protocol.dismissIdle(batch)
        expect(woken).toEqual(Array.from({ length: 150 }, (_, i) => `batch ${i} false`))
        expect(batch.tickets).toBe(1)
        // The permit goes to the first place still waiting: the other batch's, then the non-idle one.
        yield* release
        yield* Effect.yieldNow()
        expect(woken.slice(150)).toEqual(["other true"])
        protocol.unsafeRelease(otherHolder)
        yield* Effect.yieldNow()
        expect(woken.slice(150)).toEqual(["other true", "busy true"])
      }))
  }
  it.effect("a batch that ends while its workers wait in the queue (interrupted, or failing fast) leaves no permit taken", () =>
    Effect.gen(function*() {
      const limiter = yield* ConcurrencyLimiter.makeFixed(2)
      const shared = Effect.provideService(ConcurrencyLimiter.ConcurrencyLimiter, limiter)
      const busy = yield* Effect.fork(shared(Batch.run([1, 2], () => Effect.sleep("1 second"))))
      yield* Effect.yieldNow()
      // Both wait behind the busy batch: one is interrupted; the other fails fast on its first item, the rest queued.
      const interrupted = yield* Effect.fork(shared(Batch.run(Array.from({ length: 10 }, (_, i) => i), () => Effect.sleep("1 second"))))
      const failing = yield* Effect.fork(shared(Batch.forEach(
        Array.from({ length: 10 }, (_, i) => i),
        (i) => i === 0 ? Effect.fail(new TaskError.Permanent({ message: "no" })) : Effect.sleep("1 second")
      )))
      yield* Effect.yieldNow()
      yield* Fiber.interrupt(interrupted)
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(busy)
      yield* TestClock.adjust("1 second")
      const failed = yield* Fiber.poll(failing)
      expect(Option.isSome(failed) && Exit.isFailure(failed.value)).toBe(true)
      expect(limiter[permitProtocol].inUse()).toBe(0)
      // The whole limit is free for the next batch.
      const next = yield* Effect.fork(shared(Batch.run([1, 2], () => Effect.sleep("1 second"))))
      yield* Effect.yieldNow()
      expect(limiter[permitProtocol].inUse()).toBe(2)
      yield* TestClock.adjust("1 second")
      expect((yield* Fiber.join(next)).report.succeeded).toBe(2)
    }))

  for (const [name, make] of [
    ["make", (algorithm: LimitAlgorithm.LimitAlgorithm<unknown>) => ConcurrencyLimiter.make(algorithm)],
    ["makePrioritized", (algorithm: LimitAlgorithm.LimitAlgorithm<unknown>) => ConcurrencyLimiter.makePrioritized(algorithm)]
  ] as const) {
    it.effect(`${name}: batches waiting for a shared limit keep their place in its queue without a fiber per place, first come first served`, () =>
      Effect.gen(function*() {
        // A limit of 4 that may grow to 64: each batch of 50 has a worker for each item, all but a few only waiting.
        const limiter = yield* make(recordingAlgorithm({ min: 4, max: 64, initial: 4 }).algorithm as LimitAlgorithm.LimitAlgorithm<unknown>)
        const supervisor = yield* Supervisor.track
        const started: Array<number> = []
        const batches = yield* Effect.fork(Effect.all(
          Array.from({ length: 20 }, (_, b) =>
            Batch.run(
              Array.from({ length: 50 }, (_, i) => b * 50 + i),
              (n) => Effect.zipRight(Effect.sync(() => started.push(n)), Effect.sleep("100 millis"))
            )),
          { concurrency: "unbounded" }
        ).pipe(Effect.provideService(ConcurrencyLimiter.ConcurrencyLimiter, limiter), Effect.supervised(supervisor)))
        let most = 0
        for (let i = 0; i < 260; i++) {
          yield* TestClock.adjust("100 millis")
          yield* Effect.yieldNow()
          most = Math.max(most, (yield* supervisor.value).length)
        }
        const ran = yield* Fiber.join(batches)
        expect(ran.flatMap((r) => r.results.filter((x) => x._tag === "Succeeded")).length).toBe(1000)
        // The batches in the order they queued, each batch's items in theirs.
        expect(started).toEqual(Array.from({ length: 1000 }, (_, i) => i))
        // The batches' own fibers and the 4 items running: not the 1 000 of a fiber per place in the queue.
        expect(most).toBeGreaterThanOrEqual(20)
        expect(most).toBeLessThan(100)
      }))
  }
})

describe("ConcurrencyLimiter.withPermit", () => {
  it.effect("never more than the limit at once; the others wait their turn", () =>
    Effect.gen(function*() {
      const limiter = yield* ConcurrencyLimiter.makeFixed(2)
      let running = 0
      let most = 0
      const work = limiter.withPermit(Effect.acquireUseRelease(
        Effect.sync(() => most = Math.max(most, ++running)),
        () => Effect.sleep("1 second"),
        () => Effect.sync(() => running--)
      ))
      const all = yield* Effect.fork(Effect.all(Array.from({ length: 7 }, () => work), { concurrency: "unbounded" }))
      yield* TestClock.adjust("3 seconds")
      // Three rounds of two have run; the seventh is running alone.
      expect(running).toBe(1)
      yield* TestClock.adjust("1 second")
      yield* Fiber.join(all)
      expect([running, most]).toEqual([0, 2])
    }))

  it.effect("an adaptive limit moves with the successes it samples", () =>
    Effect.gen(function*() {
      const limiter = yield* ConcurrencyLimiter.make(LimitAlgorithm.aimd({ initial: 2, max: 10 }))
      const all = yield* Effect.fork(Effect.all(
        Array.from({ length: 40 }, () => limiter.withPermit(Effect.sleep("10 millis"))),
        { concurrency: "unbounded" }
      ))
      for (let i = 0; i < 40; i++) {
        yield* Effect.yieldNow()
        yield* TestClock.adjust("10 millis")
      }
      yield* Fiber.join(all)
      expect(yield* limiter.current).toBeGreaterThan(2)
      // A failure is not a sample: the limit stays where it is.
      const before = yield* limiter.current
      yield* Effect.either(limiter.withPermit(Effect.fail("bad request")))
      expect(yield* limiter.current).toBe(before)
    }))

  it.effect("layerAdaptive() runs LimitAlgorithm.recommended(): gradient from 20 up to 128", () =>
    Effect.gen(function*() {
      const limiter = yield* ConcurrencyLimiter.ConcurrencyLimiter
      expect([limiter.algorithm, yield* limiter.current, limiter.max, limiter.adaptive]).toEqual(["gradient", 20, 128, true])
    }).pipe(Effect.provide(ConcurrencyLimiter.layerAdaptive())))
})

describe("ConcurrencyLimiter.reportProviderTime", () => {
  const recording = () => recordingAlgorithm({ min: 1, max: 10, initial: 4 })

  it.effect("an attempt's sample carries what the provider said it spent, in a batch and in withPermit", () =>
    Effect.gen(function*() {
      const { algorithm, samples } = recording()
      const limiter = yield* ConcurrencyLimiter.make(algorithm)
      // 300 ms seen by the client, of which the provider says 40 (the rest: a busy client, the network).
      const task = (said: number | undefined) =>
        Effect.zipRight(Effect.sleep("300 millis"), said === undefined ? Effect.void : ConcurrencyLimiter.reportProviderTime(said))
      const run = yield* Effect.fork(
        Batch.run([40, undefined, 55], task).pipe(Effect.provideService(ConcurrencyLimiter.ConcurrencyLimiter, limiter))
      )
      yield* TestClock.adjust("300 millis")
      yield* Fiber.join(run)
      expect(samples.map((s) => [s.latencyMs, s.providerMs]).sort()).toEqual([[300, undefined], [300, 40], [300, 55]])
      const alone = yield* Effect.fork(limiter.withPermit(task(12)))
      yield* TestClock.adjust("300 millis")
      yield* Fiber.join(alone)
      expect(samples.at(-1)).toMatchObject({ latencyMs: 300, providerMs: 12 })
    }))

  it.effect("is a no-op outside a sampled attempt, and ignores what is not a duration", () =>
    Effect.gen(function*() {
      yield* ConcurrencyLimiter.reportProviderTime(10) // no attempt at all
      const fixed = yield* ConcurrencyLimiter.makeFixed(2)
      yield* fixed.withPermit(ConcurrencyLimiter.reportProviderTime(10)) // a fixed limit samples nothing
      const { algorithm, samples } = recording()
      const limiter = yield* ConcurrencyLimiter.make(algorithm)
      yield* limiter.withPermit(ConcurrencyLimiter.reportProviderTime(Number.NaN))
      yield* limiter.withPermit(ConcurrencyLimiter.reportProviderTime(-5))
      expect(samples.map((s) => s.providerMs)).toEqual([undefined, undefined])
    }))
})
