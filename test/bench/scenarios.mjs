// The scenarios of the peers benchmark (`peers.mjs`), shared with the runner processes
// (`peer-runner.mjs`): simulator options, items, what a runner is told, and the lower bound.

export const CONCURRENCY = 20
const RPM = 5200

const prompt = (i) => `Item ${i}: write one short sentence about the number ${i}.`

const rateLimited = (variant, bucketMs, told, note, headers = true) => ({
  scenario: "rate-limited",
  variant,
  title: `1${variant}. rate-limited: ${RPM} RPM, bucket ${bucketMs} ms, 600 items, ~50 ms, ${told ? "runners told the limit" : "not told"}` +
    (headers ? "" : ", no x-ratelimit-* headers (429s with retry-after-ms only)"),
  simulator: { seed: 7, requestsPerMinute: RPM, bucketMs, latency: { baseMs: 50, jitter: 0.1 }, rateLimitHeaders: headers },
  prompts: () => Array.from({ length: 600 }, (_, i) => prompt(i)),
  // The provider's bucket is full at the start: that many calls may go at once, the rest at the rate.
  boundMs: ((600 - (RPM * bucketMs) / 60_000) * 60_000) / RPM + 50,
  boundText: `(items − the provider's initial bucket of ${((RPM * bucketMs) / 60_000).toFixed(1)}) / rate + 50 ms`,
  toldRpm: told ? RPM : undefined,
  capacityLimited: false,
  note
})

const unknownCapacity = (variant, busy) => ({
  scenario: "unknown-capacity",
  variant,
  title: "2" + variant + ". unknown capacity: 32 slots + 32 queued (503 above 64 in flight), 2 000 items, ~40 ms" +
    (busy ? ", a CPU-busy process beside the runner" : ""),
  simulator: { seed: 7, capacity: 32, maxQueue: 32, latency: { baseMs: 40, jitter: 0.1 } },
  prompts: () => Array.from({ length: 2000 }, (_, i) => prompt(i)),
  boundMs: (2000 * 40) / 32,
  boundText: "items × 40 ms / 32 slots",
  capacityLimited: true,
  // Processes spinning on a core each while the runners run (the client's own CPU load); `--busy n` overrides.
  busy
})

export const scenarios = [
  rateLimited("a", 1000, true, "p-limit, LangChain and Promise.all have no rate option: they run untold here, as in (b)"),
  rateLimited("b", 1000, false),
  rateLimited("c", 100, false),
  rateLimited("d", 1000, false, "the storm case of issue #11: nothing to learn the limits from but the 429s", false),
  rateLimited("e", 100, true, "a provider that enforces its per-minute limit over 100 ms windows: a burst of a second's worth gets 429s"),
  unknownCapacity("a", 0),
  unknownCapacity("b", 1),
  {
    scenario: "flaky",
    variant: "-",
    title: "3. flaky: 10 % of served calls fail (500/502/503), 1 000 items of which 10 contain INVALID (400), ~40 ms",
    simulator: { seed: 7, failureRate: 0.1, latency: { baseMs: 40, jitter: 0.1 } },
    prompts: () => Array.from({ length: 1000 }, (_, i) => (i % 100 === 50 ? `Item ${i}: INVALID input, please refuse.` : prompt(i))),
    boundMs: (1000 * 40) / CONCURRENCY,
    boundText: "items × 40 ms / 20 (concurrency 20, retries not counted)",
    capacityLimited: false,
    note: "503s here are drawn transient server errors, not capacity refusals: they are not counted as wasted"
  }
]

export const find = (scenario, variant) => {
  const found = scenarios.find((s) => s.scenario === scenario && s.variant === variant)
  if (found === undefined) throw new Error(`unknown scenario ${scenario} ${variant}`)
  return found
}
