/**
 * Notices between the job service's processes: "a job's events were
 * stored" (so SSE subscribers on any process send them) and "a job was
 * cancelled" (so the runner running it stops). One process: an in-memory
 * `PubSub` (`layerLocal`). Several processes on PostgreSQL: `LISTEN/NOTIFY`
 * on the service's database (`layerPostgres`) — chosen over a cluster entity
 * because a notice must reach every process (every API process with
 * subscribers, every runner that might run the job), not one owner, and the
 * database is already there.
 *
 * What it does not promise: delivery. A notice sent while a process's
 * listening connection is down is lost (and `@effect/sql-pg` reconnects it
 * without saying so), so every user has a fallback: subscribers also read
 * the store every `JobEvents.pollEvery`, runners look at the job's state on
 * their progress tick. A payload is at most 8 000 bytes (PostgreSQL's limit);
 * ours are job ids and numbers.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as PubSub from "effect/PubSub"
import type * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { randomBytes } from "node:crypto"

/**
 * What a notice is about: `events` (payload `<job id> <last seq>`), `cancel`
 * (payload: the job id).
 *
 * @since 0.1.0
 * @category models
 */
export type Channel = "events" | "cancel"

/**
 * @since 0.1.0
 * @category models
 */
export interface Signals {
  /** Whether notices reach other processes (false: this process is the whole service). */
  readonly shared: boolean
  /** Sends a notice to every process, this one included. A notice that cannot be sent is logged, not failed. */
  readonly send: (channel: Channel, payload: string) => Effect.Effect<void>
  /** The notices of `channel` from now on, for as long as the scope is open. */
  readonly subscribe: (channel: Channel) => Effect.Effect<Queue.Dequeue<string>, never, Scope.Scope>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class JobSignals extends Context.Tag("effect-batch/JobSignals")<JobSignals, Signals>() {}

const channels: ReadonlyArray<Channel> = ["events", "cancel"]

/** A `PubSub` per channel. */
const makeHubs = Effect.map(
  Effect.forEach(channels, () => PubSub.unbounded<string>()),
  (hubs) => ({ events: hubs[0]!, cancel: hubs[1]! }) satisfies Record<Channel, PubSub.PubSub<string>>
)

/**
 * Notices within this process.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerLocal: Layer.Layer<JobSignals> = Layer.effect(
  JobSignals,
  Effect.map(makeHubs, (hubs): Signals => ({
    shared: false,
    send: (channel, payload) => Effect.asVoid(PubSub.publish(hubs[channel], payload)),
    subscribe: (channel) => PubSub.subscribe(hubs[channel])
  }))
)

/** The PostgreSQL channel of a notice channel. */
const pgChannel = (channel: Channel) => `effect_batch_${channel}`

/** How long building the layer waits for its own first notice (the listening connection is up). */
const readyTimeout = Duration.seconds(10)

/**
 * Notices through PostgreSQL's `LISTEN/NOTIFY`, on the `PgClient` in
 * context (one extra connection, held while the layer lives). Built once it
 * has heard its own first notice, so nothing sent after that is missed.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerPostgres = Layer.scoped(
  JobSignals,
  Effect.gen(function*() {
    // Loaded here: the package is needed only by services on PostgreSQL.
    const { PgClient } = yield* Effect.promise(() => import("@effect/sql-pg/PgClient"))
    const pg = yield* PgClient
    const sql = yield* SqlClient.SqlClient
    const hubs = yield* makeHubs
    for (const channel of channels) {
      yield* pg.listen(pgChannel(channel)).pipe(
        Stream.runForEach((payload) => PubSub.publish(hubs[channel], payload)),
        Effect.tapErrorCause((cause) => Effect.logError(`no longer listening for ${channel} notices`, cause)),
        Effect.ignore,
        Effect.forkScoped
      )
    }
    // `PgClient.notify` sends `NOTIFY channel, $1`, which PostgreSQL refuses (a utility statement takes no
    // parameters): `pg_notify` takes them.
    const send: Signals["send"] = (channel, payload) =>
      sql`SELECT pg_notify(${pgChannel(channel)}, ${payload})`.pipe(
        Effect.asVoid,
        Effect.catchAllCause((cause) => Effect.logWarning(`could not send a ${channel} notice (${payload.slice(0, 80)})`, cause))
      )
    // Ready once a notice of our own came back on every channel.
    yield* Effect.forEach(channels, (channel) =>
      Effect.gen(function*() {
        const probe = `ready ${randomBytes(8).toString("hex")}`
        const heard = yield* PubSub.subscribe(hubs[channel])
        const wait = Effect.repeat(
          Effect.zipRight(send(channel, probe), Effect.timeoutOption(heard.take, "200 millis")),
          { until: (notice) => notice._tag === "Some" && notice.value === probe }
        )
        yield* wait.pipe(
          Effect.timeout(readyTimeout),
          Effect.catchAll(() => Effect.logWarning(`no ${channel} notice came back within ${Duration.format(readyTimeout)}; going on`))
        )
      }).pipe(Effect.scoped), { discard: true })
    return {
      shared: true,
      send,
      subscribe: (channel) => PubSub.subscribe(hubs[channel])
    } satisfies Signals
  })
)
