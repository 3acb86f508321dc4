/**
 * A binary max-heap of admitted items: highest priority first, lowest index
 * first among equals (so equal priorities keep input order).
 */
export interface Entry<A> {
  readonly item: A
  readonly index: number
  readonly priority: number
}

const before = <A>(a: Entry<A>, b: Entry<A>) =>
  a.priority > b.priority || (a.priority === b.priority && a.index < b.index)

export class PriorityQueue<A> {
  private readonly heap: Array<Entry<A>> = []

  get size(): number {
    return this.heap.length
  }

  push(entry: Entry<A>): void {
    const heap = this.heap
    heap.push(entry)
    let i = heap.length - 1
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!before(heap[i]!, heap[parent]!)) break
      ;[heap[i], heap[parent]] = [heap[parent]!, heap[i]!]
      i = parent
    }
  }

  pop(): Entry<A> | undefined {
    const heap = this.heap
    const top = heap[0]
    const last = heap.pop()
    if (top === undefined || last === undefined || heap.length === 0) return top
    heap[0] = last
    let i = 0
    while (true) {
      const left = 2 * i + 1
      const right = left + 1
      let best = i
      if (left < heap.length && before(heap[left]!, heap[best]!)) best = left
      if (right < heap.length && before(heap[right]!, heap[best]!)) best = right
      if (best === i) break
      ;[heap[i], heap[best]] = [heap[best]!, heap[i]!]
      i = best
    }
    return top
  }
}
