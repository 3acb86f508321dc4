/**
 * The providers a job service may call, as named profiles configured on the
 * server: base URL, API key, models, and limits. A submitted job names a
 * profile (and one of its models), never a URL, so a client cannot make the
 * server call anywhere else.
 *
 * Each profile owns one prioritized `ConcurrencyLimiter` and one
 * `RateLimiter`, shared by every job that uses it: limits hold for the
 * provider as a whole, and a higher-priority job's items wait less
 * (`ConcurrencyLimiter.makePrioritized`). The rate limiter also learns the
 * limits the provider announces in its `x-ratelimit-*` headers.
 *
 * What it does not promise: limits are per process, and several service
 * processes on one provider would each apply them in full — unless they are
 * shared (`Options.rateLimiter`, e.g. `RedisRateLimiter`, and
 * `Options.concurrencyLimiter`, e.g. `RedisConcurrencyLimiter`; the
 * `serve --redis` flag does both).
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import * as ConcurrencyLimiter from "../ConcurrencyLimiter.js"
import * as LimitAlgorithm from "../LimitAlgorithm.js"
import * as OpenAiCompat from "../llm/OpenAiCompat.js"
import * as RateLimiter from "../RateLimiter.js"

/**
 * One profile as configured (the JSON file's entries, with `apiKeyEnv`
 * already read).
 *
 * @since 0.1.0
 * @category models
 */
export interface ProfileConfig {
  readonly name: string
  /** e.g. `https://api.openai.com/v1` */
  readonly baseUrl: string
  readonly apiKey?: Redacted.Redacted | undefined
  /** The models jobs may ask for; the first is the default. */
  readonly models: ReadonlyArray<string>
  readonly requestsPerMinute?: number | undefined
  readonly tokensPerMinute?: number | undefined
  /** A fixed limit, or `"adaptive"` (gradient, up to `maxConcurrency`). Default `"adaptive"`. */
  readonly concurrency?: number | "adaptive" | undefined
  /** Default 64. */
  readonly maxConcurrency?: number | undefined
}

/**
 * A profile ready for use: its limiters and a chat client per model.
 *
 * @since 0.1.0
 * @category models
 */
export interface Provider {
  readonly config: ProfileConfig
  readonly limiter: ConcurrencyLimiter.Limiter
  readonly rateLimiter: RateLimiter.Limiter
  readonly chat: (model: string) => OpenAiCompat.Chat
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Profiles {
  readonly defaultProfile: string
  readonly get: (name: string) => Provider | undefined
  readonly all: ReadonlyArray<Provider>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class ProviderProfiles extends Context.Tag("effect-batch/ProviderProfiles")<ProviderProfiles, Profiles>() {}

/**
 * The profiles file (`{ "profiles": [...], "default": "name" }`), as JSON.
 * `apiKeyEnv` names the environment variable holding the key: keys are
 * never written in the file.
 *
 * @since 0.1.0
 * @category schemas
 */
export const ProfilesFile = Schema.Struct({
  default: Schema.optional(Schema.String),
  profiles: Schema.NonEmptyArray(Schema.Struct({
    name: Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9_.-]{1,64}$/)),
    baseUrl: Schema.String.pipe(Schema.pattern(/^https?:\/\/\S+$/)),
    apiKeyEnv: Schema.optional(Schema.String),
    models: Schema.NonEmptyArray(Schema.String.pipe(Schema.minLength(1))),
    requestsPerMinute: Schema.optional(Schema.Number.pipe(Schema.positive())),
    tokensPerMinute: Schema.optional(Schema.Number.pipe(Schema.positive())),
    concurrency: Schema.optional(Schema.Union(Schema.Int.pipe(Schema.between(1, 10_000)), Schema.Literal("adaptive"))),
    maxConcurrency: Schema.optional(Schema.Int.pipe(Schema.between(1, 10_000)))
  }))
})

/**
 * Reads a profiles file's JSON text; the error names the field that is wrong.
 *
 * @since 0.1.0
 * @category constructors
 */
export const parse = (
  text: string,
  env: Readonly<Record<string, string | undefined>>
): Effect.Effect<{ readonly profiles: ReadonlyArray<ProfileConfig>, readonly defaultProfile: string }, Error> =>
  Effect.gen(function*() {
    const json = yield* Effect.try({ try: () => JSON.parse(text) as unknown, catch: (e) => new Error(`not JSON: ${String(e)}`) })
    // One line per issue, named by its path (`profiles.0.baseUrl: Expected …`), not the schema's whole shape.
    const file = yield* Schema.decodeUnknown(ProfilesFile)(json, { errors: "first", onExcessProperty: "error" }).pipe(
      Effect.mapError((e) =>
        new Error(ParseResult.ArrayFormatter.formatErrorSync(e).map((issue) => `${issue.path.join(".") || "the file"}: ${issue.message}`).join("; "))
      )
    )
    const profiles: Array<ProfileConfig> = []
    for (const p of file.profiles) {
      if (profiles.some((q) => q.name === p.name)) return yield* Effect.fail(new Error(`profiles: the name ${JSON.stringify(p.name)} is used twice`))
      let apiKey: Redacted.Redacted | undefined
      if (p.apiKeyEnv !== undefined) {
        const value = env[p.apiKeyEnv]
        if (value === undefined || value === "") {
          return yield* Effect.fail(new Error(`profile ${p.name}: the environment variable ${p.apiKeyEnv} (apiKeyEnv) is not set`))
        }
        apiKey = Redacted.make(value)
      }
      profiles.push({ ...p, apiKey })
    }
    const defaultProfile = file.default ?? profiles[0]!.name
    if (!profiles.some((p) => p.name === defaultProfile)) {
      return yield* Effect.fail(new Error(`default: no profile is named ${JSON.stringify(defaultProfile)}`))
    }
    return { profiles, defaultProfile }
  })

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Makes a profile's rate limiter from its limits; default
   * `RateLimiter.make`, this process's own. Give one that shares the limits
   * with other processes (`RedisRateLimiter.make`) to run several.
   */
  readonly rateLimiter?: ((config: ProfileConfig, limits: RateLimiter.Limits) => Effect.Effect<RateLimiter.Limiter>) | undefined
  /**
   * Makes a profile's concurrency limiter from this process's own (`local`)
   * and the profile's limit on the calls in flight (its fixed
   * `concurrency`, or `maxConcurrency` when adaptive); default `local`
   * itself. Give one that holds the limit over several processes
   * (`RedisConcurrencyLimiter.make`) to run several.
   */
  readonly concurrencyLimiter?:
    | ((config: ProfileConfig, local: ConcurrencyLimiter.Limiter, limit: number) => Effect.Effect<ConcurrencyLimiter.Limiter>)
    | undefined
}

const providerOf = (config: ProfileConfig, options: Options): Effect.Effect<Provider> =>
  Effect.gen(function*() {
    const max = config.maxConcurrency ?? 64
    const concurrency = config.concurrency ?? "adaptive"
    // Adaptive: `LimitAlgorithm.recommended()`'s, up to the profile's maxConcurrency.
    const local = concurrency === "adaptive"
      ? yield* ConcurrencyLimiter.makePrioritized(LimitAlgorithm.gradient({ initial: Math.min(20, max), min: 1, max, smoothing: 0.05 }))
      : yield* ConcurrencyLimiter.makePrioritized(LimitAlgorithm.fixed(concurrency))
    const limiter = options.concurrencyLimiter === undefined
      ? local
      : yield* options.concurrencyLimiter(config, local, concurrency === "adaptive" ? max : concurrency)
    const limits: RateLimiter.Limits = {
      ...(config.requestsPerMinute === undefined ? {} : { requestsPerMinute: config.requestsPerMinute }),
      ...(config.tokensPerMinute === undefined ? {} : { tokensPerMinute: config.tokensPerMinute })
    }
    const rateLimiter = yield* (options.rateLimiter ?? ((_, limits) => RateLimiter.make(limits)))(config, limits)
    const chats = new Map<string, OpenAiCompat.Chat>()
    const chat = (model: string) => {
      let client = chats.get(model)
      if (client === undefined) {
        client = OpenAiCompat.chat({ baseUrl: config.baseUrl, apiKey: config.apiKey, model })
        chats.set(model, client)
      }
      return client
    }
    return { config, limiter, rateLimiter, chat }
  })

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  profiles: ReadonlyArray<ProfileConfig>,
  defaultProfile?: string,
  options: Options = {}
): Effect.Effect<Profiles> =>
  Effect.gen(function*() {
    if (profiles.length === 0) return yield* Effect.dieMessage("ProviderProfiles: at least one profile is needed")
    const all = yield* Effect.forEach(profiles, (profile) => providerOf(profile, options))
    const byName = new Map(all.map((p) => [p.config.name, p]))
    return { defaultProfile: defaultProfile ?? profiles[0]!.name, get: (name) => byName.get(name), all }
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  profiles: ReadonlyArray<ProfileConfig>,
  defaultProfile?: string,
  options: Options = {}
): Layer.Layer<ProviderProfiles> => Layer.effect(ProviderProfiles, make(profiles, defaultProfile, options))
