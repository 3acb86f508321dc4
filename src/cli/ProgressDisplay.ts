/**
 * Shows how a run is going: on a terminal, one line redrawn in place (`\r`)
 * ten times a second; elsewhere (a pipe, a CI log), a plain line every five
 * seconds.
 *
 * The line shows items done out of the total (once the input has been
 * counted), failed items, items waiting to retry, the rate over the last few
 * seconds, the time left at that rate, the concurrency limit now and the
 * cost so far. `render` is the pure formatting of one line from a `State`;
 * `start` runs the redraws in a fiber of the caller's scope and prints notes
 * (such as rejected input lines) above the line without garbling it.
 *
 * What it does not promise: the rate and ETA are estimates over a sliding
 * window of the last 5 s (no ETA before the total is known or while nothing
 * completes); a terminal line is cut to the terminal's width rather than
 * wrapped, and the display writes to stderr, so stdout stays free for the
 * report.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type * as LiveCounters from "./LiveCounters.js"

/**
 * What one line shows.
 *
 * @since 0.1.0
 * @category models
 */
export interface State extends LiveCounters.Counters {
  /** Items per second over the recent window, when measurable. */
  readonly rate: number | undefined
}

/**
 * `bar` for a terminal line, `plain` for a log line.
 *
 * @since 0.1.0
 * @category models
 */
export type Style = "bar" | "plain"

const barWidth = 20

/**
 * A duration as `45s`, `3m05s` or `1h02m`.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatDuration = (ms: number): string => {
  const seconds = Math.max(0, Math.round(ms / 1000))
  if (seconds < 60) return `${seconds}s`
  const minutes = Math.floor(seconds / 60)
  if (minutes < 60) return `${minutes}m${String(seconds % 60).padStart(2, "0")}s`
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`
}

/**
 * USD with 4 decimals below $10, 2 above.
 *
 * @since 0.1.0
 * @category formatting
 */
export const formatCost = (usd: number): string => `$${usd.toFixed(usd >= 10 ? 2 : 4)}`

/**
 * The time left at `rate`, when both the total and a rate are known.
 *
 * @since 0.1.0
 * @category formatting
 */
export const etaMs = (state: State): number | undefined =>
  state.total === undefined || state.rate === undefined || state.rate <= 0
    ? undefined
    : (Math.max(0, state.total - state.done) / state.rate) * 1000

/**
 * One progress line (no newline, no control characters), cut to `width`
 * characters when given.
 *
 * @since 0.1.0
 * @category formatting
 */
export const render = (state: State, options: { readonly style: Style, readonly width?: number | undefined }): string => {
  const { total } = state
  const parts: Array<string> = []
  if (total !== undefined && total > 0) {
    const fraction = Math.min(1, state.done / total)
    const count = `${state.done}/${total} ${Math.floor(fraction * 100)}%`
    if (options.style === "bar") {
      const filled = Math.round(fraction * barWidth)
      parts.push(`[${"#".repeat(filled)}${"-".repeat(barWidth - filled)}] ${count}`)
    } else {
      parts.push(`progress ${count}`)
    }
  } else {
    parts.push(options.style === "bar" ? `${state.done} done` : `progress ${state.done} done`)
  }
  parts.push(`failed ${state.failed}`)
  if (state.skipped > 0) parts.push(`skipped ${state.skipped}`)
  parts.push(`retrying ${state.retrying}`)
  parts.push(state.rate === undefined ? "-/s" : `${state.rate.toFixed(1)}/s`)
  const eta = etaMs(state)
  if (total !== undefined && state.done >= total) parts.push(`done in ${formatDuration(state.elapsedMs)}`)
  else parts.push(eta === undefined ? "ETA -" : `ETA ${formatDuration(eta)}`)
  parts.push(`limit ${state.limit}`)
  parts.push(formatCost(state.cost))
  const line = parts.join(options.style === "bar" ? "  " : ", ")
  const width = options.width
  return width !== undefined && width > 1 && line.length > width ? `${line.slice(0, width - 1)}…` : line
}

/**
 * Where the display writes.
 *
 * @since 0.1.0
 * @category models
 */
export interface Output {
  readonly isTTY: boolean
  /** Terminal width, when known. */
  readonly columns: () => number | undefined
  readonly write: (text: string) => void
}

/**
 * The process's stderr.
 *
 * @since 0.1.0
 * @category constructors
 */
export const stderr: Output = {
  isTTY: process.stderr.isTTY === true,
  columns: () => process.stderr.columns,
  write: (text) => void process.stderr.write(text)
}

/**
 * `auto` picks `tty` on a terminal and `plain` elsewhere; `none` shows nothing
 * (notes included).
 *
 * @since 0.1.0
 * @category models
 */
export type Mode = "auto" | "tty" | "plain" | "none"

/**
 * A running display.
 *
 * @since 0.1.0
 * @category models
 */
export interface Display {
  /** Prints `text` on a line of its own, above the progress line. */
  readonly note: (text: string) => Effect.Effect<void>
  /** Draws the last state and stops redrawing (also done when the scope closes). */
  readonly stop: Effect.Effect<void>
}

/** Samples of (time, done) over the last `windowMs`, from `startedAt`, for a rate. */
const rateWindow = (windowMs: number, startedAt: number) => {
  const samples: Array<readonly [number, number]> = [[startedAt, 0]]
  return (at: number, done: number): number | undefined => {
    samples.push([at, done])
    while (samples.length > 2 && at - samples[1]![0] >= windowMs) samples.shift()
    const [firstAt, firstDone] = samples[0]!
    return at - firstAt >= 250 ? ((done - firstDone) * 1000) / (at - firstAt) : undefined
  }
}

/**
 * Starts redrawing `counters` on `output` until `stop` or the
 * end of the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const start = (options: {
  readonly counters: LiveCounters.LiveCounters
  readonly mode: Mode
  readonly output?: Output | undefined
}): Effect.Effect<Display, never, Scope.Scope> =>
  Effect.gen(function*() {
    const output = options.output ?? stderr
    const mode = options.mode === "auto" ? (output.isTTY ? "tty" : "plain") : options.mode
    if (mode === "none") return { note: () => Effect.void, stop: Effect.void }
    const style: Style = mode === "tty" ? "bar" : "plain"
    const interval = Duration.millis(mode === "tty" ? 100 : 5000)
    const rate = rateWindow(5000, yield* Clock.currentTimeMillis)
    let stopped = false
    let drawn = false
    const line = (at: number) => {
      const counters = options.counters.counters()
      return render({ ...counters, rate: rate(at, counters.done) }, { style, width: style === "bar" ? output.columns() : undefined })
    }
    const draw = Effect.map(Clock.currentTimeMillis, (at) => {
      if (stopped) return
      if (style === "bar") {
        output.write(`\r${line(at)}\x1b[K`)
        drawn = true
      } else {
        output.write(`${line(at)}\n`)
      }
    })
    yield* Effect.sleep(interval).pipe(
      Effect.zipRight(draw),
      Effect.forever,
      Effect.tapErrorCause(Effect.logError),
      Effect.forkScoped
    )
    const stop = Effect.suspend(() => {
      if (stopped) return Effect.void
      return Effect.zipRight(
        style === "bar" ? draw : Effect.void,
        Effect.sync(() => {
          stopped = true
          if (drawn) output.write("\n")
        })
      )
    })
    yield* Effect.addFinalizer(() => stop)
    return {
      note: (text) =>
        Effect.suspend(() => {
          if (stopped) {
            output.write(`${text}\n`)
            return Effect.void
          }
          if (style === "plain") {
            output.write(`${text}\n`)
            return Effect.void
          }
          output.write(`\r\x1b[K${text}\n`)
          return draw
        }),
      stop
    }
  })
