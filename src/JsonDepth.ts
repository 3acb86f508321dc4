/**
 * How deep JSON input may nest arrays and objects. A value parsed from
 * outside meets recursive walks later — `JSON.stringify`, the formatting of
 * schema errors, `ResultCache.key` — which overflow the stack at a few
 * thousand levels, whatever the size limit lets through (`[[[[…]]]]` is two
 * bytes a level). So input nested deeper than `limit` is refused where it
 * comes in: request bodies (`JobHttp.checkBody`) and JSONL lines
 * (`JsonlInput.parse`).
 *
 * What it does not promise: strings, numbers and the width of arrays and
 * objects are not bounded here (the body size limit does that).
 *
 * @since 0.1.0
 */

/**
 * Levels of arrays and objects taken, the outermost counted: far more than
 * any chat request needs, far fewer than overflow the stack.
 *
 * @since 0.1.0
 * @category limits
 */
export const limit = 64

/**
 * Whether `value` nests arrays and objects more than `max` levels deep
 * (default `limit`). Walks without recursion, so any depth is safe to ask
 * about, and stops at the first level past `max`.
 *
 * @since 0.1.0
 * @category checks
 */
export const exceeds = (value: unknown, max: number = limit): boolean => {
  const pending: Array<readonly [unknown, number]> = [[value, 1]]
  while (pending.length > 0) {
    const [next, depth] = pending.pop()!
    if (typeof next !== "object" || next === null) continue
    if (depth > max) return true
    for (const child of Object.values(next)) pending.push([child, depth + 1])
  }
  return false
}
