// Where a CPU profile's time went: self time by package and by function, largest first; given two profiles
// (say run L's and run J's, or one build's and the next's), the second's minus the first's.
//   node test/bench/profile-summary.mjs [--top N] a.cpuprofile [b.cpuprofile]
// Self time only: an Effect program's JavaScript stack starts at the fiber scheduler, not at the code that
// forked the fiber, so time "under" a function of ours says little. Packages are read from the script's path
// (node_modules/<package>, this package's dist/<folder>, node: for Node's own); V8's pseudo-frames
// ("(garbage collector)", "(idle)", "(program)") and native functions keep their names.
import { readFileSync } from "node:fs"

const args = process.argv.slice(2)
const at = args.indexOf("--top")
const top = at < 0 ? 30 : Number(args[at + 1])
const files = at < 0 ? args : args.filter((_, i) => i !== at && i !== at + 1)
if (!Number.isInteger(top) || top < 1 || files.length < 1 || files.length > 2) {
  console.error("usage: node test/bench/profile-summary.mjs [--top N] a.cpuprofile [b.cpuprofile]")
  process.exit(2)
}

const packageOf = ({ url, functionName }) => {
  if (url === "") return functionName || "(native)"
  const dependency = url.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/)
  if (dependency !== null) return dependency[1]
  const ours = url.match(/\/dist\/(?:(.+)\/)?[^/]+$/)
  if (ours !== null) return `effect-batch ${ours[1] ?? "."}`
  return url.startsWith("node:") ? "node:" : url
}
const functionOf = ({ url, functionName, lineNumber }) =>
  `${functionName || "(anonymous)"} ${url.replace(/.*node_modules\//, "").replace(/.*\/dist\//, "dist/")}:${lineNumber + 1}`

/** Self time in ms by package and by function. */
const load = (path) => {
  let profile
  try {
    profile = JSON.parse(readFileSync(path, "utf8"))
    if (!Array.isArray(profile.nodes) || !Array.isArray(profile.samples)) throw new Error("no nodes or samples: not a .cpuprofile")
  } catch (error) {
    console.error(`profile-summary: ${path}: ${error.message}`)
    process.exit(2)
  }
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]))
  const byPackage = new Map()
  const byFunction = new Map()
  let total = 0
  profile.samples.forEach((id, i) => {
    const ms = (profile.timeDeltas[i] ?? 0) / 1000
    const frame = nodes.get(id).callFrame
    const pkg = packageOf(frame)
    const fn = functionOf(frame)
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + ms)
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + ms)
    total += ms
  })
  return { byPackage, byFunction, total }
}

const profiles = files.map(load)
const table = (title, pick) => {
  const [a, b] = profiles.map(pick)
  const keys = new Set([...a.keys(), ...(b?.keys() ?? [])])
  const rows = [...keys].map((key) => ({ key, a: a.get(key) ?? 0, b: b?.get(key) ?? 0 }))
  const weight = (row) => (b === undefined ? row.a : row.b - row.a)
  rows.sort((x, y) => weight(y) - weight(x))
  console.log(`\n${title}`)
  console.log(b === undefined ? "       ms" : "  b − a ms       a       b")
  for (const row of rows.slice(0, top)) {
    const figures = b === undefined
      ? row.a.toFixed(1).padStart(9)
      : `${weight(row).toFixed(1).padStart(10)} ${row.a.toFixed(0).padStart(7)} ${row.b.toFixed(0).padStart(7)}`
    console.log(`${figures}  ${row.key}`)
  }
}
console.log(profiles.map((p, i) => `${"ab"[i]}: ${files[i]}, ${p.total.toFixed(0)} ms sampled`).join("\n"))
table("self time by package", (p) => p.byPackage)
table("self time by function", (p) => p.byFunction)
