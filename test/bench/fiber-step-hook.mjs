// Calls `onStep(op, primitive)` before every step of Effect's fiber runtime in this process: the hook the preloads
// fiber-steps.mjs (how many steps) and fiber-sites.mjs (which code sites) count with. It wraps the step methods of
// effect 3.22.4's internal `FiberRuntime` (the version package.json pins), whose loop calls the method named after
// each primitive's op code; `who` names the caller in the error thrown when a method is missing (another version).
export const onFiberStep = async (who, onStep) => {
  const { FiberRuntime } = await import(new URL("../../node_modules/effect/dist/esm/internal/fiberRuntime.js", import.meta.url).href)
  const ops = ["Sync", "Success", "Failure", "OnSuccess", "OnFailure", "OnSuccessAndFailure", "Async", "Yield", "WithRuntime",
    "UpdateRuntimeFlags", "While", "Iterator", "Commit", "Left", "Right", "Some", "None", "Tag"]
  for (const op of ops) {
    const step = FiberRuntime.prototype[op]
    if (typeof step !== "function") throw new Error(`${who}: FiberRuntime has no ${op} step (not effect 3.22?)`)
    FiberRuntime.prototype[op] = function (primitive) {
      onStep(op, primitive)
      return step.call(this, primitive)
    }
  }
}
