/** One thing that went wrong with a peer, as the status page shows it. */
export interface RecentError {
  /** Wall-clock ms of the latest occurrence. */
  time: number
  peerId: string
  message: string
  /** Occurrences in a row (a peer failing every probe is one line, not hundreds). */
  count: number
}

/** The last `capacity` errors, newest first; repeats of a peer's last error are counted. */
export class RecentErrors {
  private readonly items: RecentError[] = []
  private readonly capacity: number

  constructor(capacity: number) {
    this.capacity = capacity
  }

  add(peerId: string, message: string, now = Date.now()): void {
    const same = this.items.find((e) => e.peerId === peerId)
    if (same != null && same.message === message) {
      same.count++
      same.time = now
      this.items.splice(this.items.indexOf(same), 1)
      this.items.unshift(same)
      return
    }
    this.items.unshift({ time: now, peerId, message, count: 1 })
    if (this.items.length > this.capacity) this.items.length = this.capacity
  }

  all(): RecentError[] {
    return this.items.map((e) => ({ ...e }))
  }
}
