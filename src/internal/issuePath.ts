/**
 * How the path of a schema issue is written in messages, for the JSONL
 * reader's rejected lines and the job service's 400s alike:
 * `items[0].messages[1].content`, with a key that is not a plain name in
 * brackets (`metadata["a b"]`). `hyphens` lets names such as
 * `idempotency-key` (a header) stand plain.
 */
export const issuePath = (path: ReadonlyArray<PropertyKey>, options: { readonly hyphens?: boolean } = {}): string => {
  const plain = options.hyphens === true ? /^[A-Za-z_$][A-Za-z0-9_$-]*$/ : /^[A-Za-z_$][A-Za-z0-9_$]*$/
  return path.reduce<string>((text, key) =>
    typeof key === "number"
      ? `${text}[${key}]`
      : plain.test(String(key))
        ? `${text === "" ? "" : `${text}.`}${String(key)}`
        : `${text}[${JSON.stringify(String(key))}]`, "")
}
