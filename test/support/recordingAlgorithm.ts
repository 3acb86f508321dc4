import type * as LimitAlgorithm from "../../src/LimitAlgorithm.js"

/**
 * An adaptive algorithm (`min < max`) whose limit never moves from `initial`: it records the samples it is
 * given, for tests of what a limiter samples and of limiters whose limit must hold still.
 */
export const recordingAlgorithm = (bounds: { readonly min: number, readonly max: number, readonly initial: number }) => {
  const samples: Array<LimitAlgorithm.Sample> = []
  const algorithm: LimitAlgorithm.LimitAlgorithm<number> = {
    name: "recording",
    ...bounds,
    limit: (s) => s,
    update: (s, sample) => {
      samples.push(sample)
      return s
    }
  }
  return { samples, algorithm }
}
