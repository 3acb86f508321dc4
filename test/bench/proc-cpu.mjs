// CPU time of a process as Linux's /proc counts it (user + system, in ms): all its threads, or its main thread
// alone. The other threads of a Node process are V8's (garbage collection, compilation) and libuv's pool, so the
// difference tells a process's JavaScript from the collection its allocations cost. Linux only: the callers read
// these only where /proc exists.
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"

const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100
  } catch {
    return 100
  }
})()

/** utime + stime of a `stat` file (the 14th and 15th fields, after the command's name in brackets), in ms. */
const statCpuMs = (path) => {
  const stat = readFileSync(path, "utf8")
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicks
}

/** CPU a process has used so far, every thread. */
export const cpuMsOf = (pid) => statCpuMs(`/proc/${pid}/stat`)

/** CPU a process's main thread (its event loop) has used so far. */
export const mainThreadCpuMsOf = (pid) => statCpuMs(`/proc/${pid}/task/${pid}/stat`)
