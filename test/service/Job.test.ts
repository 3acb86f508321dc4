/**
 * The job's lifecycle as a table: what it allows, and that `sourcesOf` and
 * `isTerminal` read the same table.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Job from "../../src/service/Job.js"

describe("Job.transitions", () => {
  it("lists exactly the moves the service makes", () => {
    const moves = Job.JobState.literals.flatMap((from) =>
      Job.JobState.literals.filter((to) => Job.canMove(from, to)).map((to) => `${from} → ${to}`))
    expect(moves).toEqual([
      "queued → running",
      "queued → cancelled",
      "queued → failed",
      "running → finished",
      "running → stopped",
      "running → cancelled",
      "running → failed",
      "finished → queued",
      "stopped → queued",
      "cancelled → queued",
      "failed → queued"
    ])
  })

  it("no state moves to itself", () => {
    for (const state of Job.JobState.literals) expect(Job.canMove(state, state)).toBe(false)
  })

  it("sourcesOf is canMove read backwards", () => {
    for (const to of Job.JobState.literals) {
      expect(Job.sourcesOf(to)).toEqual(Job.JobState.literals.filter((from) => Job.canMove(from, to)))
    }
  })

  it("a terminal state is left only by a replay (to queued)", () => {
    for (const state of Job.JobState.literals) {
      expect(Job.isTerminal(state)).toBe(Job.transitions[state].every((to) => to === "queued"))
    }
  })
})
