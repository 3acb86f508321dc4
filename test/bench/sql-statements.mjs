// A preload (`node --import`) for the jobs bench's `--sql`: every SQLite statement a service process runs in the
// measured window, counted and timed by its text, with the prepares and the transactions (by the statements
// in them), written as a table to the file EFFECT_BATCH_BENCH_SQL names. SQLite only (better-sqlite3, which
// the single-process runs use); a process on PostgreSQL writes an empty table.
// It wraps better-sqlite3's `Database.prototype.prepare` and the run/all/get methods of the statements it
// returns; the process imports the same (cached) module afterwards. SIGUSR2 starts the count, SIGUSR1 writes it.
// Timing each call costs a little: CPU figures taken with it are not comparable with figures taken without.
import { writeFileSync } from "node:fs"
import { createRequire } from "node:module"

const out = process.env.EFFECT_BATCH_BENCH_SQL
if (out !== undefined && out !== "") {
  const Database = createRequire(import.meta.url)("better-sqlite3")
  let counting = false
  /** By kind and text: calls and ms. */
  const statements = new Map()
  /** By the distinct statements in them: how many. */
  const transactions = new Map()
  let inTransaction
  // Texts differ by their placeholders' count (`IN (?, ?)`, VALUES lists) and by literals some libraries inline:
  // folded, so that one statement of many sizes is one row.
  const textOf = (sql) =>
    sql.replace(/\s+/g, " ").trim()
      .replace(/\((?:\?|\$\d+)(?:, ?(?:\?|\$\d+))*\)(?:, ?\((?:\?|\$\d+)(?:, ?(?:\?|\$\d+))*\))*/g, "(…)")
      .replace(/\b\d{6,}\b/g, "N")
      .slice(0, 140)
  const record = (kind, sql, ms) => {
    const text = textOf(sql)
    const key = `${kind} ${text}`
    const entry = statements.get(key) ?? { calls: 0, ms: 0 }
    entry.calls++
    entry.ms += ms
    statements.set(key, entry)
    if (kind === "prepare") return
    if (/^BEGIN/i.test(text)) inTransaction = new Set()
    else if (/^COMMIT/i.test(text) && inTransaction !== undefined) {
      const shape = Array.from(inTransaction).join("; ") || "(empty)"
      transactions.set(shape, (transactions.get(shape) ?? 0) + 1)
      inTransaction = undefined
    } else inTransaction?.add(text.slice(0, 60))
  }
  const timed = (kind, call, sql) => {
    if (!counting) return call()
    const start = process.hrtime.bigint()
    try {
      return call()
    } finally {
      record(kind, sql, Number(process.hrtime.bigint() - start) / 1e6)
    }
  }
  const prepare = Database.prototype.prepare
  const wrapped = new WeakSet()
  Database.prototype.prepare = function (sql) {
    const statement = timed("prepare", () => prepare.call(this, sql), sql)
    const proto = Object.getPrototypeOf(statement)
    if (!wrapped.has(proto)) {
      wrapped.add(proto)
      for (const method of ["run", "all", "get"]) {
        const original = proto[method]
        proto[method] = function (...params) {
          return timed(method, () => original.apply(this, params), this.source)
        }
      }
    }
    return statement
  }
  const write = () => {
    const rows = Array.from(statements).sort((a, b) => b[1].ms - a[1].ms)
    const sum = (pick) => rows.filter(pick).reduce((n, [, e]) => ({ calls: n.calls + e.calls, ms: n.ms + e.ms }), { calls: 0, ms: 0 })
    const run = sum(([key]) => !key.startsWith("prepare "))
    const prepared = sum(([key]) => key.startsWith("prepare "))
    const lines = [
      `${run.calls} statements run in ${run.ms.toFixed(0)} ms; ${prepared.calls} prepared in ${prepared.ms.toFixed(0)} ms; ` +
      `${Array.from(transactions.values()).reduce((n, c) => n + c, 0)} transactions`,
      "",
      "   calls       ms  statement (kind, text)",
      ...rows.map(([key, e]) => `${String(e.calls).padStart(8)} ${e.ms.toFixed(1).padStart(8)}  ${key}`),
      "",
      "   count  transaction (the statements in it)",
      ...Array.from(transactions).sort((a, b) => b[1] - a[1]).map(([shape, n]) => `${String(n).padStart(8)}  ${shape}`)
    ]
    writeFileSync(out, lines.join("\n") + "\n")
  }
  process.on("SIGUSR2", () => {
    counting = true
  })
  process.on("SIGUSR1", () => {
    if (!counting) return
    counting = false
    write()
  })
}
