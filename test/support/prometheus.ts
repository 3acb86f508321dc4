/**
 * Reading a `/metrics` page in tests, with a Prometheus text-format parser
 * (`parse-prometheus-text-format`): the sum of a family's samples whose
 * labels include the ones given.
 */
import type { Family } from "parse-prometheus-text-format"

/** The sum of the samples of `name` whose labels include `labels` (a histogram's or summary's: their counts). */
export const sum = (all: ReadonlyArray<Family>, name: string, labels: Record<string, string> = {}) =>
  (all.find((f) => f.name === name)?.metrics ?? [])
    .filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
    .reduce((total, m) => total + Number(m.value ?? m.count ?? 0), 0)
