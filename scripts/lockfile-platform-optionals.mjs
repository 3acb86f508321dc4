// Adds the platform-specific optional packages that `npm install` left out of
// package-lock.json, so that `npm ci` accepts the lockfile.
//
// Why: the registry this project is built against is a mirror that lacks some
// platform builds (darwin, win32, musl…) of rollup and msgpackr-extract. `npm
// install` skips an optional package it cannot fetch and writes no entry for
// it; `npm ci` then resolves the same missing edge, finds no entry and refuses
// ("Missing: … from lock file"). An entry that carries the package's os/cpu/libc
// lets `npm ci` see that it does not apply to this machine and skip it without
// fetching. Run it after any `npm install` that rewrites the lockfile:
//
//   node scripts/lockfile-platform-optionals.mjs
//
// It only adds entries for exact-version optional dependencies whose name
// spells out a platform; it never touches an entry that is already there.
import { readFileSync, writeFileSync } from "node:fs"

const lockPath = new URL("../package-lock.json", import.meta.url)
const lock = JSON.parse(readFileSync(lockPath, "utf8"))

const operatingSystems = ["android", "darwin", "freebsd", "linux", "netbsd", "openbsd", "openharmony", "sunos", "win32", "aix"]
const cpus = ["arm64", "arm", "x64", "ia32", "loong64", "ppc64", "riscv64", "s390x", "mips64el"]

const platformOf = (name) => {
  const parts = name.slice(name.lastIndexOf("/") + 1).split("-")
  const os = parts.find((part) => operatingSystems.includes(part))
  const cpu = parts.find((part) => cpus.includes(part))
  if (os === undefined || cpu === undefined) return undefined
  const abi = parts[parts.indexOf(cpu) + 1] ?? ""
  const libc = abi.startsWith("musl") ? "musl" : abi.startsWith("gnu") ? "glibc" : undefined
  return { os, cpu, libc }
}

const added = []
for (const [path, entry] of Object.entries(lock.packages)) {
  for (const [name, spec] of Object.entries(entry.optionalDependencies ?? {})) {
    if (!/^\d+\.\d+\.\d+$/.test(spec)) continue
    const platform = platformOf(name)
    if (platform === undefined) continue
    const nested = `${path === "" ? "" : `${path}/`}node_modules/${name}`
    if (lock.packages[nested] !== undefined || lock.packages[`node_modules/${name}`] !== undefined) continue
    lock.packages[`node_modules/${name}`] = {
      version: spec,
      cpu: [platform.cpu],
      ...(entry.dev ? { dev: true } : {}),
      ...(platform.libc === undefined ? {} : { libc: [platform.libc] }),
      optional: true,
      os: [platform.os]
    }
    added.push(`${name}@${spec}`)
  }
}

lock.packages = Object.fromEntries(
  Object.entries(lock.packages).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : a > b ? 1 : 0))
)
writeFileSync(lockPath, `${JSON.stringify(lock, null, 2)}\n`)
console.log(added.length === 0 ? "lockfile: nothing to add" : `lockfile: added ${added.length} entries\n  ${added.join("\n  ")}`)
