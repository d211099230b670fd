import { Counter, Histogram, type Registry } from 'prom-client'
/** The allocator's own metrics (`mtc_allocator_*`), beside the libp2p stack's. */
export declare class AllocatorMetrics {
  readonly allocations: Counter<'outcome'>
  readonly phase: Histogram<'phase'>
  readonly reaped: Counter<'reason'>
  constructor(
    registry: Registry,
    sources: {
      running: () => number
      starting: () => number
      cacheBytes: () => Promise<number>
    },
  )
}
