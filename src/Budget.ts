/**
 * A cost budget: what calls cost (a price table per model), what a batch has
 * spent, and a cap on it.
 *
 * Before each attempt the batch reserves the attempt's estimated cost (its
 * `estimate(...).usd`); when spent + reserved + that estimate would cross
 * `maxCost`, the budget refuses, the batch stops admitting, the attempts in
 * flight finish and settle, and every item not yet started comes back
 * `Skipped{reason: "budget"}`. The report then carries the `BudgetExceeded`.
 * A settled attempt replaces its reservation with its actual cost (from
 * `settle(...).usd`); a failed one gives it back.
 *
 * What it does not promise: it caps what the estimates foresee, so the actual
 * total can pass `maxCost` by as much as the estimates were low on the
 * attempts in flight; a failed call is counted as free (providers do not bill
 * rejected requests, but a timed-out one may have been billed).
 *
 * Without a `Budget` layer each batch has its own, uncapped; a provided layer
 * is shared by every batch that runs under it (one cap for a whole program).
 *
 * @since 0.1.0
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"

/**
 * USD per million tokens.
 *
 * @since 0.1.0
 * @category models
 */
export interface Prices {
  readonly input: number
  /** Prompt tokens served from the provider's prompt cache. Default: `input`. */
  readonly cachedInput?: number | undefined
  readonly output: number
  /**
   * The price through the provider's batch API, as a share of these
   * (OpenAI's and Anthropic's: 0.5). Default: 0.5.
   */
  readonly batchDiscount?: number | undefined
}

/**
 * Token counts of one call, as a provider reports them.
 *
 * @since 0.1.0
 * @category models
 */
export interface Usage {
  /** Prompt tokens, cached ones included. */
  readonly inputTokens: number
  /** Of `inputTokens`, those billed at the cached price. Default 0. */
  readonly cachedInputTokens?: number | undefined
  readonly outputTokens: number
}

/**
 * List prices (USD per million tokens) of common OpenAI models, and of the
 * simulator's (priced like `gpt-4o-mini` and `text-embedding-3-small`, so a
 * demo shows realistic figures). Override or extend with `pricesWith`.
 *
 * @since 0.1.0
 * @category prices
 */
export const defaultPrices: Readonly<Record<string, Prices>> = {
  "gpt-4o": { input: 2.5, cachedInput: 1.25, output: 10 },
  "gpt-4o-mini": { input: 0.15, cachedInput: 0.075, output: 0.6 },
  "gpt-4.1": { input: 2, cachedInput: 0.5, output: 8 },
  "gpt-4.1-mini": { input: 0.4, cachedInput: 0.1, output: 1.6 },
  "gpt-4.1-nano": { input: 0.1, cachedInput: 0.025, output: 0.4 },
  "text-embedding-3-small": { input: 0.02, output: 0 },
  "text-embedding-3-large": { input: 0.13, output: 0 },
  "sim-chat": { input: 0.15, cachedInput: 0.075, output: 0.6 },
  "sim-embed": { input: 0.02, output: 0 }
}

const validPrices = (model: string, prices: Prices): Prices => {
  for (const [field, value] of Object.entries(prices)) {
    if (value !== undefined && !(Number.isFinite(value) && value >= 0)) {
      throw new Cause.IllegalArgumentException(`Budget: price ${field} of model "${model}" must be a number ≥ 0, got ${value}`)
    }
    if (field === "batchDiscount" && value !== undefined && !(value > 0 && value <= 1)) {
      throw new Cause.IllegalArgumentException(`Budget: batchDiscount of model "${model}" must be in (0, 1], got ${value}`)
    }
  }
  return prices
}

/**
 * The default table with `overrides` on top (validated).
 *
 * @since 0.1.0
 * @category prices
 */
export const pricesWith = (overrides: Readonly<Record<string, Prices>>): Readonly<Record<string, Prices>> => ({
  ...defaultPrices,
  ...Object.fromEntries(Object.entries(overrides).map(([model, prices]) => [model, validPrices(model, prices)]))
})

/**
 * The cost in USD of `usage` at `prices`.
 *
 * @since 0.1.0
 * @category prices
 */
export const costOf = (prices: Prices, usage: Usage): number => {
  const cached = Math.min(usage.cachedInputTokens ?? 0, usage.inputTokens)
  return ((usage.inputTokens - cached) * prices.input + cached * (prices.cachedInput ?? prices.input) +
    usage.outputTokens * prices.output) / 1_000_000
}

/**
 * The projected cost of a whole batch: what was spent, plus the items left at
 * the average cost of the items settled so far (0 before any has settled).
 *
 * @since 0.1.0
 * @category prices
 */
export const projectedCost = (spent: number, settledItems: number, totalItems: number): number =>
  settledItems <= 0 ? spent : spent + (spent / settledItems) * Math.max(0, totalItems - settledItems)

/**
 * The budget refused an attempt: `spent + reserved + next` would pass `maxCost`.
 *
 * @since 0.1.0
 * @category errors
 */
export class BudgetExceeded extends Schema.TaggedError<BudgetExceeded>()("BudgetExceeded", {
  maxCost: Schema.Number,
  spent: Schema.Number,
  reserved: Schema.Number,
  next: Schema.Number
}) {
  override get message(): string {
    return `budget of $${this.maxCost} reached: $${this.spent.toFixed(4)} spent, ` +
      `$${this.reserved.toFixed(4)} reserved in flight, next call estimated at $${this.next.toFixed(4)}`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Snapshot {
  readonly maxCost: number | undefined
  /** Actual cost of settled attempts. */
  readonly spent: number
  /** Estimates of attempts in flight. */
  readonly reserved: number
  /** Set once the budget has refused an attempt. */
  readonly exceeded: BudgetExceeded | undefined
}

/**
 * The budget's ledger. Synchronous: the engine calls it on its hot path.
 *
 * @since 0.1.0
 * @category models
 */
export interface Ledger {
  /** Reserves `usd` unless that would pass the cap; whether it was reserved. */
  readonly unsafeReserve: (usd: number) => boolean
  /** Replaces a reservation of `reserved` by the actual cost `actual`. */
  readonly unsafeSettle: (reserved: number, actual: number) => void
  /** Gives a reservation back (the attempt failed or was abandoned). */
  readonly unsafeRelease: (reserved: number) => void
  readonly unsafeSnapshot: () => Snapshot
  readonly snapshot: Effect.Effect<Snapshot>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Budget extends Context.Tag("effect-batch/Budget")<Budget, Ledger>() {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Cap in USD, ≥ 0. Default: none (costs are still counted). */
  readonly maxCost?: number | undefined
}

/**
 * A fresh ledger.
 *
 * @since 0.1.0
 * @category constructors
 */
export const unsafeMake = (options: Options = {}): Ledger => {
  const maxCost = options.maxCost
  if (maxCost !== undefined && !(Number.isFinite(maxCost) && maxCost >= 0)) {
    throw new Cause.IllegalArgumentException(`Budget: maxCost must be a number ≥ 0, got ${maxCost}`)
  }
  let spent = 0
  let reserved = 0
  let exceeded: BudgetExceeded | undefined
  const unsafeSnapshot = (): Snapshot => ({ maxCost, spent, reserved, exceeded })
  return {
    unsafeReserve: (usd) => {
      // A tolerance of a millionth of a cent, so that estimates summing exactly to the cap fit.
      if (maxCost !== undefined && spent + reserved + usd > maxCost + 1e-8) {
        exceeded ??= new BudgetExceeded({ maxCost, spent, reserved, next: usd })
        return false
      }
      reserved += usd
      return true
    },
    unsafeSettle: (reservedUsd, actual) => {
      reserved = Math.max(0, reserved - reservedUsd)
      spent += actual
    },
    unsafeRelease: (reservedUsd) => {
      reserved = Math.max(0, reserved - reservedUsd)
    },
    unsafeSnapshot,
    snapshot: Effect.sync(unsafeSnapshot)
  }
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Ledger> => Effect.sync(() => unsafeMake(options))

/**
 * One budget for every batch run under this layer.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<Budget> => Layer.effect(Budget, make(options))
