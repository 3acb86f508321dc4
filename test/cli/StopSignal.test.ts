import { describe, expect, it } from "@effect/vitest"
import * as StopSignal from "../../src/cli/StopSignal.js"

describe("StopSignal.signalHandler", () => {
  it("signals within a second of the first are that first request; later ones are the next", () => {
    let now = 0
    let requests = 0
    const onSignal = StopSignal.signalHandler(() => requests++, () => now)
    onSignal()
    expect(requests).toBe(1)
    // npm's and tsx's relays of the same Ctrl-C.
    now = 30
    onSignal()
    now = 999
    onSignal()
    expect(requests).toBe(1)
    now = 1_000
    onSignal()
    expect(requests).toBe(2)
    now = 1_001
    onSignal()
    expect(requests).toBe(3)
  })
})
