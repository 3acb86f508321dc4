/**
 * The one-line message of the job API's schema errors: each issue named by
 * its path, a union's shallower branch left out, long messages and long lists cut.
 */
import { describe, expect, it } from "@effect/vitest"
import * as JobHttp from "../../src/service/JobHttp.js"

describe("JobHttp.decodeErrorMessage", () => {
  it("names each issue by its path; an issue another one goes deeper into is left out", () => {
    expect(JobHttp.decodeErrorMessage([
      { _tag: "Type", path: ["items", 0], message: "Expected string, actual {\"messages\":[]}" },
      { _tag: "Missing", path: ["items", 0, "messages", 0], message: "is missing" },
      { _tag: "Type", path: ["metadata", "a b"], message: "Expected string, actual 1" }
    ])).toBe("items[0].messages[0] is missing; metadata[\"a b\"]: Expected string, actual 1")
    expect(JobHttp.decodeErrorMessage([{ _tag: "Type", path: [], message: "Expected SubmitJob, actual null" }]))
      .toBe("the request: Expected SubmitJob, actual null")
  })

  it("cuts a long message and a long list", () => {
    const message = JobHttp.decodeErrorMessage(
      Array.from({ length: 7 }, (_, i) => ({ _tag: "Type" as const, path: [`f${i}`], message: `Expected string, actual ${"x".repeat(400)}` }))
    )
    const clauses = message.split("; ")
    expect(clauses).toHaveLength(6)
    expect(clauses[0]).toBe(`f0: ${`Expected string, actual ${"x".repeat(400)}`.slice(0, 300)}…`)
    expect(clauses[5]).toBe("and 2 more")
  })
})
