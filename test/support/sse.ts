/** Server-sent events as a test reads them from a response's whole text. */

export interface SseEvent {
  readonly id: number
  readonly event: string
  readonly data: { readonly at: number, readonly state?: string }
}

/** The frames of `text` that carry an id, in order. */
export const sseEvents = (text: string): Array<SseEvent> =>
  text.split("\n\n").flatMap((frame) => {
    const fields = new Map(frame.split("\n").map((line) => [line.slice(0, line.indexOf(":")), line.slice(line.indexOf(":") + 1).trim()]))
    const id = fields.get("id")
    return id === undefined ? [] : [{ id: Number(id), event: fields.get("event")!, data: JSON.parse(fields.get("data")!) }]
  })
