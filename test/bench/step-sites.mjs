// Which code sites the fiber steps of a `--sites` window went to (`fiber-sites.mjs`), largest first; given two
// windows (say run L's and run J's), the second's minus the first's. `--per N` divides every figure by N: the
// items of a run, or, for run J − run L, the 200 jobs that J has and L has not (both run the same items).
//   node test/bench/step-sites.mjs [--top N] [--per N] a.sites.json [b.sites.json]
// A site is a function's first characters of source, mostly Effect's own (`a => sync(() => f(a))`): look it up
// in node_modules/effect/dist/esm to see what it is. Steps that run no function of their own (`Success`,
// `UpdateRuntimeFlags`) count under the op's name.
import { readFileSync } from "node:fs"

const args = process.argv.slice(2)
const option = (flag, otherwise) => {
  const at = args.indexOf(flag)
  if (at < 0) return otherwise
  const value = Number(args[at + 1])
  args.splice(at, 2)
  return value
}
const top = option("--top", 40)
const per = option("--per", 1)
if (!Number.isInteger(top) || top < 1 || !(per > 0) || args.length < 1 || args.length > 2) {
  console.error("usage: node test/bench/step-sites.mjs [--top N] [--per N] a.sites.json [b.sites.json]")
  process.exit(2)
}

const load = (path) => {
  try {
    const counted = JSON.parse(readFileSync(path, "utf8"))
    if (typeof counted.steps !== "number" || !Array.isArray(counted.sites)) throw new Error("no steps or sites: not fiber-sites.mjs's")
    return counted
  } catch (error) {
    console.error(`step-sites: ${path}: ${error.message}`)
    process.exit(2)
  }
}
const [a, b] = args.map(load)
const format = (n) => (n / per).toFixed(per === 1 ? 0 : 1).padStart(10)
const scale = per === 1 ? "" : ` (per ${per})`
const first = new Map(a.sites)
const second = b === undefined ? undefined : new Map(b.sites)
if (second === undefined) {
  console.log(`${args[0]}: ${format(a.steps).trim()} steps${scale} at ${first.size} sites\n`)
  for (const [site, n] of a.sites.slice(0, top)) console.log(`${format(n)}  ${site}`)
} else {
  console.log(`a: ${args[0]}, ${format(a.steps).trim()} steps${scale}`)
  console.log(`b: ${args[1]}, ${format(b.steps).trim()} steps${scale}`)
  console.log(`b − a: ${format(b.steps - a.steps).trim()} steps${scale}\n`)
  console.log("     b − a          a          b  site")
  const rows = Array.from(new Set([...first.keys(), ...second.keys()]), (site) => {
    const [x, y] = [first.get(site) ?? 0, second.get(site) ?? 0]
    return { site, x, y, d: y - x }
  }).sort((r, s) => Math.abs(s.d) - Math.abs(r.d))
  for (const { d, site, x, y } of rows.slice(0, top)) console.log(`${format(d)} ${format(x)} ${format(y)}  ${site}`)
}
