import { ProxyError } from './errors.ts'

interface Waiter {
  resolve: () => void
  reject: (err: Error) => void
  timer: NodeJS.Timeout
}

/**
 * Counts the streams to one instance, those being opened included, against a cap:
 * beyond it a new stream waits (first come, first served) for one to close, at most
 * `maxWaiting` of them and each at most `waitMs`; then 503 ERR_INSTANCE_BUSY.
 */
export class StreamSlots {
  private used = 0
  private readonly waiters: Waiter[] = []
  private readonly max: number
  private readonly maxWaiting: number
  private readonly waitMs: number

  constructor(max: number, maxWaiting: number, waitMs: number) {
    this.max = max
    this.maxWaiting = maxWaiting
    this.waitMs = waitMs
  }

  /** Streams waiting for a slot. */
  get waiting(): number {
    return this.waiters.length
  }

  /** Streams open or being opened. */
  get inUse(): number {
    return this.used
  }

  /** Resolves once the caller holds a slot (release it exactly once). */
  acquire(): Promise<void> {
    if (this.used < this.max && this.waiters.length === 0) {
      this.used++
      return Promise.resolve()
    }
    if (this.waiters.length >= this.maxWaiting) {
      return Promise.reject(
        new ProxyError('ERR_INSTANCE_BUSY', `${this.waiters.length} requests already wait`),
      )
    }
    return new Promise((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(waiter)
          if (i >= 0) this.waiters.splice(i, 1)
          reject(new ProxyError('ERR_INSTANCE_BUSY', `no stream freed within ${this.waitMs} ms`))
        }, this.waitMs),
      }
      this.waiters.push(waiter)
    })
  }

  release(): void {
    const next = this.waiters.shift()
    if (next != null) {
      clearTimeout(next.timer)
      next.resolve() // the slot passes on
      return
    }
    this.used--
  }

  /** Fails every waiter (the instance is forgotten). */
  close(): void {
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer)
      w.reject(new ProxyError('ERR_INSTANCE_UNREACHABLE', 'instance forgotten'))
    }
  }
}
