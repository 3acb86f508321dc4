/**
 * What the job service does for a tenant, behind the HTTP handlers: submit
 * (checked before anything is stored), look up, list, cancel, read results
 * and dead letters, replay them, follow events. Jobs run on `JobRunner`;
 * everything they leave behind is in the `JobStore`.
 *
 * A job of another tenant is answered exactly like a job that does not
 * exist (`JobNotFound`), so ids cannot be probed.
 *
 * An `Idempotency-Key` names one job per tenant: the same key with the same
 * payload (compared decoded, by the SHA-256 of its canonical JSON) is that
 * job again; with another payload it is `IdempotencyKeyReused`.
 *
 * A `file` is read from the server's input folder and nowhere else: the
 * name's real path, links resolved, must be inside the folder's, and the
 * lines are read from the handle that was checked (`InputFolder`).
 *
 * A running job's counts, cost and rate are what its runner last published
 * (every `JobRunner.progressEvery`, when they moved), so they may trail its
 * results by that much; an ended job's are the store's.
 *
 * What it does not promise: a server-side `file` is read once, at
 * submission; changing the file afterwards changes nothing (and a retry that
 * names the same file is the same request, whatever the file holds now). A
 * job stored before payload hashes were kept matches any payload under its key.
 *
 * @since 0.1.0
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { randomBytes } from "node:crypto"
import * as CheckpointStore from "../CheckpointStore.js"
import * as BatchApi from "../llm/BatchApi.js"
import * as InputFolder from "./InputFolder.js"
import * as JsonlInput from "../llm/JsonlInput.js"
import * as JobApi from "./JobApi.js"
import * as Job from "./Job.js"
import * as JobEvents from "./JobEvents.js"
import * as JobRunner from "./JobRunner.js"
import * as JobStore from "./JobStore.js"
import * as ProviderProfiles from "./ProviderProfiles.js"
import * as ResultCache from "../ResultCache.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Limits {
  /** Items per job. Default 100 000. */
  readonly maxItems: number
  /** Where `file` submissions are read from; without it, `file` is refused. */
  readonly inputDir?: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly submit: (
    tenant: string,
    payload: JobApi.SubmitJob,
    idempotencyKey: string | undefined
  ) => Effect.Effect<typeof JobApi.Submitted.Type, JobApi.InvalidJob | JobApi.TooManyItems | JobApi.IdempotencyKeyReused>
  readonly get: (tenant: string, id: string) => Effect.Effect<JobApi.Job, JobApi.JobNotFound>
  readonly list: (tenant: string, query: {
    readonly state?: Job.JobState | undefined
    readonly limit?: number | undefined
    readonly cursor?: string | undefined
  }) => Effect.Effect<typeof JobApi.JobPage.Type, JobApi.InvalidJob>
  readonly cancel: (tenant: string, id: string) => Effect.Effect<JobApi.Job, JobApi.JobNotFound>
  readonly deadLetters: (tenant: string, id: string) => Effect.Effect<typeof JobApi.DeadLetters.Type, JobApi.JobNotFound>
  readonly shards: (tenant: string, id: string) => Effect.Effect<typeof JobApi.Shards.Type, JobApi.JobNotFound>
  readonly replay: (tenant: string, id: string) => Effect.Effect<JobApi.Job, JobApi.JobNotFound | JobApi.JobBusy>
  /**
   * JSON lines of the settled items, in input order. With `follow`, every
   * item, each once it and all before it have settled, until the job ends.
   */
  readonly results: (
    tenant: string,
    id: string,
    options?: { readonly follow?: boolean | undefined }
  ) => Effect.Effect<Stream.Stream<string>, JobApi.JobNotFound>
  /**
   * A follower of the job's events after `lastEventId`, opened in its scope;
   * it ends after the job reaches a final state.
   */
  readonly events: (
    tenant: string,
    id: string,
    lastEventId: number
  ) => Effect.Effect<Effect.Effect<JobEvents.Follower, never, Scope.Scope>, JobApi.JobNotFound>
  readonly profiles: ReadonlyArray<typeof JobApi.Profile.Type>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Jobs extends Context.Tag("effect-batch/Jobs")<Jobs, Service>() {}

const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"

/**
 * A fresh job id.
 *
 * @since 0.1.0
 * @category ids
 */
export const newId = (): string => {
  const bytes = randomBytes(24)
  let id = "job_"
  for (const byte of bytes) id += alphabet[byte % 36]
  return id
}

const pageSize = 500
/** How often a following results stream looks for newly settled items. */
const followEvery = "250 millis"

const cursorOf = (job: JobStore.JobRow) => Buffer.from(`${job.createdAt}:${job.id}`).toString("base64url")

const resultLine = (item: JobStore.SettledItem): string => {
  const base = { index: item.index, status: item.status, attempts: item.attempts }
  return JSON.stringify(
    item.status === "succeeded"
      ? { ...base, output: item.output }
      : item.status === "failed"
        ? { ...base, error: item.output }
        : { ...base, reason: item.output.reason }
  ) + "\n"
}

const decodeStateEvent = Schema.decodeUnknownOption(Schema.parseJson(Job.StateEvent))

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (limits: Limits) =>
  Effect.gen(function*() {
    const store = yield* JobStore.JobStore
    const events = yield* JobEvents.JobEvents
    const runner = yield* JobRunner.JobRunner
    const profiles = yield* ProviderProfiles.ProviderProfiles
    // Files are read with the service's own file system.
    const files = yield* Effect.context<FileSystem.FileSystem | Path.Path>()
    const clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()

    const invalid = (field: string, message: string) => Effect.fail(new JobApi.InvalidJob({ field, message }))
    const notFound = (id: string) => new JobApi.JobNotFound({ id, message: `no job ${id}` })
    const tooMany = (count: number) =>
      Effect.fail(new JobApi.TooManyItems({ limit: limits.maxItems, count, message: `${count} items; a job takes at most ${limits.maxItems}` }))

    const owned = (tenant: string, id: string) =>
      Effect.flatMap(Effect.orDie(store.get(id, tenant)), (job) => job === undefined ? Effect.fail(notFound(id)) : Effect.succeed(job))

    interface Stored {
      readonly totals: JobStore.Totals
      readonly timeSpent: JobStore.TimeSpent | undefined
    }
    /**
     * An ended job's totals and time spent, by id, once nothing is pending, while it stays ended (`finishedAt`
     * unchanged): they no longer move. A cancelled job's time spent is read again each time: its interrupted
     * chunks may add theirs after it ended.
     */
    const ended = new Map<string, { readonly finishedAt: number } & Stored>()
    /**
     * The jobs' totals (but a running job's fresh ones, `known`) and time spent from the store, in two reads for all
     * of them (a list of 70 jobs read every 200 ms made two queries per job); an ended job's kept.
     */
    const storedOf = (
      jobs: ReadonlyArray<JobStore.JobRow>,
      known: ReadonlyArray<JobStore.Totals | undefined>
    ): Effect.Effect<ReadonlyArray<Stored>> =>
      Effect.gen(function*() {
        const kept = jobs.map((job, i) => {
          if (known[i] !== undefined || !Job.isTerminal(job.state) || job.finishedAt === undefined) return undefined
          const entry = ended.get(job.id)
          return entry?.finishedAt === job.finishedAt ? entry : undefined
        })
        // A cancelled job's time spent is read again even when kept.
        const timeIds = jobs.filter((job, i) => kept[i] === undefined || job.state === "cancelled").map((job) => job.id)
        const totalsIds = jobs.filter((_, i) => known[i] === undefined && kept[i] === undefined).map((job) => job.id)
        const [times, totals] = yield* Effect.orDie(Effect.all([
          timeIds.length === 0 ? Effect.succeed(new Map<string, JobStore.TimeSpent>()) : store.timeSpentOf(timeIds),
          totalsIds.length === 0 ? Effect.succeed(new Map<string, JobStore.Totals>()) : store.totalsOf(totalsIds)
        ], { concurrency: 2 }))
        return jobs.map((job, i): Stored => {
          const entry = kept[i]
          if (entry !== undefined) return job.state === "cancelled" ? { ...entry, timeSpent: times.get(job.id) } : entry
          const read = { totals: known[i] ?? totals.get(job.id) ?? JobStore.noTotals, timeSpent: times.get(job.id) }
          // A job cancelled by request ends before its runner skips what was pending: kept once nothing is.
          if (known[i] === undefined && Job.isTerminal(job.state) && job.finishedAt !== undefined && read.totals.pending === 0) {
            if (ended.size >= 10_000) ended.clear()
            ended.set(job.id, { finishedAt: job.finishedAt, ...read })
          }
          return read
        })
      })

    /** The jobs as the API shows them. */
    const views = (jobs: ReadonlyArray<JobStore.JobRow>): Effect.Effect<ReadonlyArray<JobApi.Job>> =>
      Effect.gen(function*() {
        // Published by the worker running the job, in whichever process; a running job's totals too, when fresh.
        const running = jobs.filter((job) => job.state === "running").map((job) => job.id)
        const published = running.length === 0 ? [] : yield* Effect.orDie(runner.progressOf(running))
        const progressById = new Map(running.map((id, i) => [id, published[i]]))
        const progress = jobs.map((job) => progressById.get(job.id))
        const stored = yield* storedOf(jobs, progress.map((p) => p?.totals))
        // A job without a published limit shows its profile's limit here: read once per profile, not per job.
        const limits = new Map<string, number>()
        for (let i = 0; i < jobs.length; i++) {
          const profile = jobs[i]!.profile
          if (progress[i]?.concurrencyLimit !== undefined || limits.has(profile)) continue
          const provider = profiles.get(profile)
          limits.set(profile, provider === undefined ? 0 : yield* provider.limiter.current)
        }
        return jobs.map((job, i) => viewOf(job, progress[i], stored[i]!, progress[i]?.concurrencyLimit ?? limits.get(job.profile)!))
      })
    const view = (job: JobStore.JobRow) => Effect.map(views([job]), (shown) => shown[0]!)

    const viewOf = (
      job: JobStore.JobRow,
      progress: JobRunner.Progress | undefined,
      fromStore: Stored,
      concurrencyLimit: number
    ): JobApi.Job => {
      const totals = fromStore.totals
      const rate = progress?.rate ?? 0
      return {
        id: job.id,
        state: job.state,
        ...(job.reason === undefined ? {} : { reason: job.reason }),
        profile: job.profile,
        model: job.model,
        priority: job.priority,
        ...(job.spec.mode === undefined ? {} : { mode: job.spec.mode }),
        counts: {
          total: totals.total,
          succeeded: totals.succeeded,
          failed: totals.failed,
          skipped: totals.skipped,
          pending: totals.pending
        },
        rate,
        ...(rate > 0 ? { etaSeconds: totals.pending / rate } : {}),
        cost: totals.cost,
        tokens: totals.tokens,
        concurrencyLimit,
        ...(fromStore.timeSpent === undefined ? {} : { timeSpent: fromStore.timeSpent }),
        round: job.round,
        createdAt: job.createdAt,
        ...(job.startedAt === undefined ? {} : { startedAt: job.startedAt }),
        ...(job.finishedAt === undefined ? {} : { finishedAt: job.finishedAt }),
        metadata: job.metadata
      }
    }

    /**
     * The items of a server-side JSONL file, read from the handle
     * `InputFolder` opened and checked (never by name again). A line that is
     * not an item (bad JSON, not a chat request) becomes a `Rejected` item
     * naming `file:line`, like the CLI does: the rest of the file still runs.
     */
    const readFile = (name: string) =>
      Effect.gen(function*() {
        if (limits.inputDir === undefined) return yield* invalid("file", "this server takes no file submissions (no input folder is configured)")
        const items: Array<JobStore.NewItem> = []
        let tooManyAt: number | undefined
        const failure = yield* JsonlInput.lines(InputFolder.read(limits.inputDir, name)).pipe(
          Stream.runForEachWhile((line) => {
            if (items.length >= limits.maxItems) {
              tooManyAt = items.length + 1
              return Effect.succeed(false)
            }
            const item = JsonlInput.parse(name, line, items.length)
            items.push(item._tag === "Entry" ? { input: item.input } : { input: line.text, rejected: item.message })
            return Effect.succeed(true)
          }),
          Effect.as(undefined),
          Effect.catchAll((error) => Effect.succeed(error.message)),
          Effect.provide(files)
        )
        if (failure !== undefined) return yield* invalid("file", failure)
        if (tooManyAt !== undefined) return yield* tooMany(tooManyAt)
        if (items.length === 0) return yield* invalid("file", `${name} holds no items`)
        return items
      })

    const submit: Service["submit"] = (tenant, payload, idempotencyKey) =>
      Effect.gen(function*() {
        if ((payload.items === undefined) === (payload.file === undefined)) {
          return yield* invalid("items", "give exactly one of items (inline) and file (a JSONL file in the server's input folder)")
        }
        if (payload.items !== undefined) {
          if (payload.items.length === 0) return yield* invalid("items", "items is empty")
          if (payload.items.length > limits.maxItems) return yield* tooMany(payload.items.length)
        }
        const profileName = payload.profile ?? profiles.defaultProfile
        const provider = profiles.get(profileName)
        if (provider === undefined) {
          return yield* invalid("profile", `no profile ${JSON.stringify(profileName)}; known: ${profiles.all.map((p) => p.config.name).join(", ")}`)
        }
        const model = payload.model ?? provider.config.models[0]!
        if (!provider.config.models.includes(model)) {
          return yield* invalid("model", `profile ${profileName} has no model ${JSON.stringify(model)}; known: ${provider.config.models.join(", ")}`)
        }
        if (payload.mode === "batch") {
          for (const field of ["maxAttempts", "itemTimeout", "itemDeadline", "priority"] as const) {
            if (payload[field] !== undefined) return yield* invalid(field, `${field} shapes live calls, and a batch job makes none`)
          }
        }
        const soft = payload.timeLimit?.soft
        const hard = payload.timeLimit?.hard
        if (soft !== undefined && hard !== undefined && soft > hard) {
          return yield* invalid("timeLimit.soft", `the soft limit (${soft} s) is past the hard one (${hard} s)`)
        }
        const items = payload.items !== undefined
          ? payload.items.map((item): JobStore.NewItem => ({ input: item }))
          : yield* readFile(payload.file!)
        const rejected = items.filter((item) => item.rejected !== undefined).length
        const payloadHash = ResultCache.key(payload)
        const createdAt = now()
        // Its `queued` event goes in with it: one transaction, not a second one (and a notice) to store the event.
        const { created, job } = yield* Effect.orDie(store.insert({
          id: newId(),
          tenant,
          idempotencyKey,
          payloadHash,
          profile: profileName,
          model,
          priority: payload.priority ?? 0,
          spec: {
            ...(payload.mode === "batch" ? { mode: "batch" as const } : {}),
            maxCost: payload.maxCost,
            maxAttempts: payload.maxAttempts,
            softLimitSeconds: soft,
            hardLimitSeconds: hard,
            itemTimeoutSeconds: payload.itemTimeout,
            itemDeadlineSeconds: payload.itemDeadline
          },
          metadata: payload.metadata ?? {},
          total: items.length,
          createdAt
        }, items, [JobEvents.newEvent("state", { state: "queued" }, createdAt)]))
        // A job stored before hashes were kept has none: it is taken for the same request, as it was then.
        if (!created && job.payloadHash !== undefined && job.payloadHash !== payloadHash) {
          return yield* Effect.fail(
            new JobApi.IdempotencyKeyReused({
              key: idempotencyKey!,
              message: `the Idempotency-Key ${JSON.stringify(idempotencyKey)} was used for a different request (job ${job.id}); a new request needs a new key`
            })
          )
        }
        if (created) yield* runner.execute(job, 0)
        return { id: job.id, state: job.state, created, ...(created && rejected > 0 ? { rejected } : {}) }
      })

    const list: Service["list"] = (tenant, query) =>
      Effect.gen(function*() {
        let before: { createdAt: number, id: string } | undefined
        if (query.cursor !== undefined) {
          const decoded = Buffer.from(query.cursor, "base64url").toString("utf8")
          const match = /^(\d+):(job_[0-9a-z]{24})$/.exec(decoded)
          if (match === null) return yield* invalid("cursor", "not a cursor this server gave")
          before = { createdAt: Number(match[1]), id: match[2]! }
        }
        const limit = query.limit ?? 50
        const rows = yield* Effect.orDie(store.list({ tenant, state: query.state, limit: limit + 1, before }))
        const page = rows.slice(0, limit)
        const jobs = yield* views(page)
        return rows.length > limit ? { jobs, next: cursorOf(page[page.length - 1]!) } : { jobs }
      })

    const cancel: Service["cancel"] = (tenant, id) =>
      Effect.gen(function*() {
        const job = yield* owned(tenant, id)
        if (Job.isTerminal(job.state)) return yield* view(job)
        // A job that ended meanwhile is not moved (the transition table refuses it).
        const moved = yield* Effect.orDie(store.setState(id, "cancelled", { reason: "cancelled by request", now: now() }))
        // The runner's end of the job publishes the final counts and the cancelled state, once.
        if (moved) yield* runner.cancel(id)
        return yield* view(yield* owned(tenant, id))
      })

    // Where batch-mode jobs keep their shards (`JobRunner`'s record of each job's batch run).
    const checkpoints = Option.getOrUndefined(yield* Effect.serviceOption(CheckpointStore.CheckpointStore))
    const shards: Service["shards"] = (tenant, id) =>
      Effect.gen(function*() {
        const job = yield* owned(tenant, id)
        if (checkpoints === undefined || job.spec.mode !== "batch") return { shards: [] }
        const found = yield* BatchApi.shards(JobRunner.batchRunId(id)).pipe(
          Effect.provideService(CheckpointStore.CheckpointStore, checkpoints),
          // Not started yet: no run recorded.
          Effect.catchTag("CheckpointError", () => Effect.succeed([]))
        )
        return { shards: found.map(({ batch, ...shard }) => ({ ...shard, ...(batch === undefined ? {} : { batch }) })) }
      })

    const deadLetters: Service["deadLetters"] = (tenant, id) =>
      Effect.gen(function*() {
        yield* owned(tenant, id)
        const items = yield* Effect.orDie(store.deadLetters(id))
        return {
          items: items.map((item) => ({
            index: item.index,
            input: item.input,
            errorClass: item.errorClass,
            message: item.output.message,
            ...(item.output.status === undefined ? {} : { status: item.output.status }),
            attempts: item.attempts
          }))
        }
      })

    const replay: Service["replay"] = (tenant, id) =>
      Effect.gen(function*() {
        const job = yield* owned(tenant, id)
        if (!Job.isTerminal(job.state)) {
          return yield* Effect.fail(new JobApi.JobBusy({ id, state: job.state, message: `job ${id} is ${job.state}; replay it once it ends` }))
        }
        const reopened = yield* Effect.orDie(store.reopenFailed(id, now()))
        if (reopened > 0) {
          yield* events.publish(id, "state", { state: "queued", replaying: reopened })
          yield* runner.execute(job, job.round + 1)
        }
        return yield* view(yield* owned(tenant, id))
      })

    const settledSoFar = (id: string) =>
      Stream.paginateChunkEffect(-1, (after) =>
        Effect.map(Effect.orDie(store.settled(id, after, pageSize)), (items) => {
          const lines = items.map(resultLine)
          return [
            Chunk.unsafeFromArray(lines),
            items.length < pageSize ? Option.none<number>() : Option.some(items[items.length - 1]!.index)
          ] as const
        }))

    /** The settled prefix of the items, polled every `followEvery` until the job has ended and all is sent. */
    const following = (id: string) =>
      Stream.paginateChunkEffect(0, (next) =>
        Effect.gen(function*() {
          const job = yield* Effect.orDie(store.get(id))
          const ended = job === undefined || Job.isTerminal(job.state)
          const items = yield* Effect.orDie(store.settled(id, next - 1, pageSize))
          const prefix: Array<JobStore.SettledItem> = []
          for (const item of items) {
            if (item.index !== next + prefix.length) break
            prefix.push(item)
          }
          const after = next + prefix.length
          const done = ended && (job === undefined || after >= job.total)
          if (prefix.length === 0 && !done) yield* Effect.sleep(followEvery)
          return [Chunk.unsafeFromArray(prefix.map(resultLine)), done ? Option.none<number>() : Option.some(after)] as const
        }))

    const results: Service["results"] = (tenant, id, options) =>
      Effect.as(owned(tenant, id), options?.follow === true ? following(id) : settledSoFar(id))

    const isFinalEvent = (event: JobEvents.Event) =>
      event.type === "state" && Option.exists(decodeStateEvent(event.data), (data) => Job.isTerminal(data.state))

    /**
     * Whether nothing after `seq` is worth waiting for: the job has ended, and no state event follows (a replay's
     * would). A progress or limit event that crossed the job's end (published by a tick that began before it) is
     * not: waiting for a final state after it would wait forever. `known`: the job as just read.
     */
    const endsAt = (id: string, seq: number, known?: JobStore.JobRow) =>
      Effect.orDie(Effect.gen(function*() {
        const job = known ?? (yield* store.get(id))
        if (job === undefined || !Job.isTerminal(job.state)) return false
        if (seq >= (yield* store.lastSeq(id))) return true
        return !(yield* store.events(id, seq)).some((event) => event.type === "state")
      }))

    const noMoreEvents: JobEvents.Follower = { next: () => Effect.succeed({ events: [], ended: true }) }
    const followEvents: Service["events"] = (tenant, id, lastEventId) =>
      Effect.gen(function*() {
        const job = yield* owned(tenant, id)
        yield* Effect.orDie(events.flush)
        // Resuming after the last event of an ended job: there is nothing to wait for.
        if (yield* endsAt(id, lastEventId, job)) return Effect.succeed(noMoreEvents)
        return Effect.map(events.follow(id, lastEventId), (follower): JobEvents.Follower => {
          let done = false
          // A final state ends the follower if it is the job's last event (after a replay, more follow).
          const upToEnd = (batch: JobEvents.Batch) =>
            Effect.gen(function*() {
              for (const [i, event] of batch.events.entries()) {
                if (isFinalEvent(event) && (yield* endsAt(id, event.seq))) {
                  done = true
                  return { events: batch.events.slice(0, i + 1), ended: true }
                }
              }
              return batch
            })
          const next = (within: Duration.Duration) =>
            Effect.suspend(() => done ? noMoreEvents.next(within) : Effect.flatMap(follower.next(within), upToEnd))
          return { next }
        })
      })

    return {
      submit,
      get: (tenant, id) => Effect.flatMap(owned(tenant, id), view),
      list,
      cancel,
      deadLetters,
      shards,
      replay,
      results,
      events: followEvents,
      profiles: profiles.all.map((p) => ({
        name: p.config.name,
        models: p.config.models,
        default: p.config.name === profiles.defaultProfile
      }))
    } satisfies Service
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (limits: Limits) => Layer.effect(Jobs, make(limits))
