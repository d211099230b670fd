import { Counter, Gauge, Histogram } from 'prom-client'
/** The allocator's own metrics (`mtc_allocator_*`), beside the libp2p stack's. */
export class AllocatorMetrics {
  allocations
  phase
  reaped
  constructor(registry, sources) {
    const registers = [registry]
    this.allocations = new Counter({
      name: 'mtc_allocator_allocations_total',
      help: 'Allocation requests by outcome: started, reused, or the error code',
      labelNames: ['outcome'],
      registers,
    })
    this.phase = new Histogram({
      name: 'mtc_allocator_allocation_duration_seconds',
      help: 'Time of an allocation by phase: image (fetch/load), start (container), ready (answers through the overlay), total',
      labelNames: ['phase'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    })
    this.reaped = new Counter({
      name: 'mtc_allocator_instances_reaped_total',
      help: 'Instances stopped by the allocator, by reason (idle, exited)',
      labelNames: ['reason'],
      registers,
    })
    const running = new Gauge({
      name: 'mtc_allocator_instances_running',
      help: 'Instances this allocator runs',
      registers,
      collect: () => {
        running.set(sources.running())
      },
    })
    const starting = new Gauge({
      name: 'mtc_allocator_instances_starting',
      help: 'Instance starts in flight',
      registers,
      collect: () => {
        starting.set(sources.starting())
      },
    })
    const cache = new Gauge({
      name: 'mtc_allocator_image_cache_bytes',
      help: 'Bytes of image tarballs kept (and served) by this allocator',
      registers,
      collect: async () => {
        cache.set(await sources.cacheBytes())
      },
    })
  }
}
//# sourceMappingURL=metrics.js.map
