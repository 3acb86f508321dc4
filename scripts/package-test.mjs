// The package as a user gets it: build, `npm pack`, install the tarball into a
// fresh ESM project with the peers the README documents (from the local npm
// cache: --offline), then
//   1. every bare import in the installed dist/ is a dependency or a peer of
//      the package (an undeclared one would load here only by luck of hoisting);
//   2. `npx effect-batch --help`, and a small `run --simulate`;
//   3. a TypeScript file importing every entry point of the exports map,
//      compiled with tsc (strict, exactOptionalPropertyTypes, NodeNext, no
//      skipLibCheck), then run with node, and so is the README's quick start,
//      pasted as it stands;
//   4. what the exports map closes stays closed (bin, internal/*, cli/*).
// Any failure exits 1, naming the step.
import { execFileSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

const root = new URL("..", import.meta.url).pathname
const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"))
const lock = JSON.parse(readFileSync(join(root, "package-lock.json"), "utf8"))
const locked = (name) => lock.packages[`node_modules/${name}`]?.version ?? fail(`${name} is not in package-lock.json`)

function fail(message) {
  console.error(`package test: ${message}`)
  process.exit(1)
}

const run = (step, command, args, options = {}) => {
  try {
    return execFileSync(command, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], ...options })
  } catch (error) {
    fail(`${step}: ${command} ${args.join(" ")} exited ${error.status}\n${error.stdout ?? ""}${error.stderr ?? ""}`)
  }
}

const dir = mkdtempSync(join(tmpdir(), "effect-batch-package-"))
const keep = process.argv.includes("--keep")
process.on("exit", () => keep ? console.log(`package test: left ${dir}`) : rmSync(dir, { recursive: true, force: true }))

console.log("package test: build and pack")
rmSync(join(root, "dist"), { recursive: true, force: true })
run("build", "npm", ["run", "build", "--silent"], { cwd: root })
const tarball = join(dir, run("pack", "npm", ["pack", "--silent", "--pack-destination", dir], { cwd: root }).trim().split("\n").pop())

// The peers as the README's install lines name them: the required ones and every optional wing's.
const peers = Object.keys(pkg.peerDependencies).map((name) => `${name}@${locked(name)}`)
const project = join(dir, "project")
mkdirSync(project)
writeFileSync(join(project, "package.json"), JSON.stringify({ name: "adopter", private: true, type: "module" }, null, 2))
console.log(`package test: npm install ${tarball.split("/").pop()} ${peers.join(" ")}`)
run("install", "npm", [
  "install",
  "--prefer-offline",
  "--no-audit",
  "--no-fund",
  tarball,
  ...peers,
  `typescript@${locked("typescript")}`,
  `@types/node@${locked("@types/node")}`
], { cwd: project })

// 1. Every bare import of the installed code is declared.
const installed = join(project, "node_modules", "effect-batch")
const declared = new Set([...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.peerDependencies ?? {})])
const undeclared = new Map()
// Static imports and re-exports (not type-only), and dynamic imports, of a package name.
const bareImport = /(?:^|\n)\s*(?:import|export)(?!\s+type\b)[^"'`]*?from\s*["']([^"'.][^"']*)["']|import\(\s*["']([^"'.][^"']*)["']\s*\)/g
const walk = (folder) => {
  for (const entry of readdirSync(folder, { withFileTypes: true })) {
    const path = join(folder, entry.name)
    if (entry.isDirectory()) walk(path)
    else if (entry.name.endsWith(".js")) {
      const text = readFileSync(path, "utf8")
      for (const match of text.matchAll(bareImport)) {
        const spec = match[1] ?? match[2]
        if (spec.startsWith("node:")) continue
        const name = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]
        if (!declared.has(name) && !undeclared.has(name)) undeclared.set(name, path.slice(installed.length + 1))
      }
    }
  }
}
walk(join(installed, "dist"))
if (undeclared.size > 0) {
  fail(`imports of undeclared packages:\n${[...undeclared].map(([name, file]) => `  ${name} (first in ${file})`).join("\n")}`)
}

// 2. The command.
console.log("package test: npx effect-batch --help, run --simulate")
const help = run("--help", "npx", ["--no-install", "effect-batch", "--help"], { cwd: project })
if (!help.includes("run") || !help.includes("serve")) fail(`--help does not list the commands:\n${help}`)
writeFileSync(join(project, "prompts.jsonl"), ["\"one\"", "\"two\"", "{\"id\": \"q3\", \"messages\": [{\"role\": \"user\", \"content\": \"three\"}]}"].join("\n"))
run("run --simulate", "npx", [
  "--no-install",
  "effect-batch",
  "run",
  "prompts.jsonl",
  "--out",
  "results.jsonl",
  "--simulate",
  "--sim-failure-rate",
  "0",
  "--progress",
  "none",
  "--run-id",
  "first",
  "--db",
  "runs.db"
], { cwd: project })
const results = readFileSync(join(project, "results.jsonl"), "utf8").trim().split("\n").map((line) => JSON.parse(line))
if (results.length !== 3 || !results.every((r) => r.status === "succeeded")) fail(`run --simulate wrote:\n${JSON.stringify(results)}`)

// 3. Every entry point, from TypeScript, as an adopter compiles it.
const entries = Object.keys(pkg.exports).filter((key) => key !== "./package.json").map((key) => key === "." ? "effect-batch" : `effect-batch/${key.slice(2)}`)
const names = entries.map((_, i) => `entry${i}`)
writeFileSync(join(project, "check.ts"), [
  ...entries.map((entry, i) => `import * as ${names[i]} from "${entry}"`),
  "import packageJson from \"effect-batch/package.json\" with { type: \"json\" }",
  "import { Effect } from \"effect\"",
  "",
  "const counts: Record<string, number> = {",
  ...entries.map((entry, i) => `  ${JSON.stringify(entry)}: Object.keys(${names[i]}).length,`),
  "}",
  "const { results } = await Effect.runPromise(entry0.Batch.run([1, 2, 3], (n: number) => Effect.succeed(n * 2), { concurrency: 2 }))",
  "const doubled = results.map((r) => (r._tag === \"Succeeded\" ? r.value : -1))",
  "console.log(JSON.stringify({ version: packageJson.version, counts, doubled }))",
  ""
].join("\n"))
writeFileSync(join(project, "tsconfig.json"), JSON.stringify({
  compilerOptions: {
    target: "ES2022",
    module: "NodeNext",
    moduleResolution: "NodeNext",
    strict: true,
    exactOptionalPropertyTypes: true,
    noUncheckedIndexedAccess: true,
    resolveJsonModule: true,
    types: ["node"],
    outDir: "out"
  },
  files: ["check.ts"]
}, null, 2))
console.log(`package test: tsc and node over ${entries.join(", ")}`)
run("tsc", "npx", ["--no-install", "tsc", "-p", "."], { cwd: project })
const checked = JSON.parse(run("node", process.execPath, ["out/check.js"], { cwd: project }))
for (const entry of entries) if (!(checked.counts[entry] > 0)) fail(`${entry} exports nothing`)
if (JSON.stringify(checked.doubled) !== "[2,4,6]") fail(`Batch.run from the installed package gave ${JSON.stringify(checked.doubled)}`)

// The README's quick start, pasted into the project as it stands.
const readme = readFileSync(join(root, "README.md"), "utf8")
const quickStart = /## Quick start[\s\S]*?```ts\n([\s\S]*?)\n```/.exec(readme)?.[1] ?? fail("README: no ```ts block under ## Quick start")
writeFileSync(join(project, "quick-start.ts"), `${quickStart}\n`)
writeFileSync(join(project, "tsconfig.json"), JSON.stringify({ ...JSON.parse(readFileSync(join(project, "tsconfig.json"), "utf8")), files: ["quick-start.ts"] }, null, 2))
console.log("package test: the README's quick start, as pasted")
run("tsc quick start", "npx", ["--no-install", "tsc", "-p", "."], { cwd: project })
const started = run("node quick start", process.execPath, ["out/quick-start.js"], { cwd: project })
if (!started.includes("items        10: 9 succeeded, 1 failed")) fail(`the quick start printed:\n${started}`)

// 4. Closed doors.
for (const spec of ["effect-batch/bin", "effect-batch/internal/engine", "effect-batch/cli/Cli", "effect-batch/Batch"]) {
  const probe = run("closed", process.execPath, ["--input-type=module", "-e", `import(${JSON.stringify(spec)}).then(() => console.log("open"), (e) => console.log(e.code))`], { cwd: project }).trim()
  if (probe !== "ERR_PACKAGE_PATH_NOT_EXPORTED") fail(`${spec} should not be importable, got ${probe}`)
}

console.log(`package test: passed (${entries.length} entry points, ${checked.version})`)
