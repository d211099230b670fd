import { createServer } from 'node:net'
import { PORTS_PER_INSTANCE } from '../constants.ts'

/**
 * The managed port range: hands out blocks of PORTS_PER_INSTANCE consecutive ports,
 * never one that is taken (by an instance, or by anything else bound on the host), so
 * two starts cannot race for a port the way listen-then-close did in the original.
 */
export class PortPool {
  private readonly first: number
  private readonly last: number
  private readonly taken = new Set<number>()
  private readonly host: string

  constructor(range: { first: number; last: number }, host = '0.0.0.0') {
    this.first = range.first
    this.last = range.last
    this.host = host
  }

  /** Marks a block as taken (a re-adopted container's ports). */
  claim(ports: number[]): void {
    for (const p of ports) this.taken.add(p)
  }

  release(ports: number[]): void {
    for (const p of ports) this.taken.delete(p)
  }

  /** A free block, claimed; undefined when the range is exhausted. */
  async acquire(): Promise<number[] | undefined> {
    for (
      let base = this.first;
      base + PORTS_PER_INSTANCE - 1 <= this.last;
      base += PORTS_PER_INSTANCE
    ) {
      const block = Array.from({ length: PORTS_PER_INSTANCE }, (_, i) => base + i)
      if (block.some((p) => this.taken.has(p))) continue
      // Claimed before the checks so a concurrent acquire skips it.
      this.claim(block)
      if ((await Promise.all(block.map((p) => isFree(p, this.host)))).every(Boolean)) return block
      this.release(block)
    }
    return undefined
  }
}

function isFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', () => resolve(false))
    server.listen(port, host, () => server.close(() => resolve(true)))
  })
}
