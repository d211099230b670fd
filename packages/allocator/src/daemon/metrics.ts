import { Counter, Gauge, Histogram, type Registry } from 'prom-client'

/** The allocator's own metrics (`mtc_allocator_*`), beside the libp2p stack's. */
export class AllocatorMetrics {
  readonly allocations: Counter<'outcome'>
  readonly phase: Histogram<'phase'>
  readonly reaped: Counter<'reason'>
  readonly minInstanceStarts: Counter<'where'>
  readonly keptIdle: Counter

  constructor(
    registry: Registry,
    sources: {
      running: () => number
      starting: () => number
      cacheBytes: () => Promise<number>
      services?: () => Record<string, { running: number; starting: number }>
    },
  ) {
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
    this.minInstanceStarts = new Counter({
      name: 'mtc_allocator_min_instance_starts_total',
      help: 'Instances started by this allocator as the min-instances leader, by where (here, other allocator, failed)',
      labelNames: ['where'],
      registers,
    })
    this.keptIdle = new Counter({
      name: 'mtc_allocator_idle_kept_total',
      help: 'Idle instances not stopped because their service would go below --min-instances (counted per reaping round)',
      registers,
    })
    const perService: Gauge<'service' | 'state'> = new Gauge({
      name: 'mtc_allocator_service_instances',
      help: 'Instances this allocator runs or starts, per service and state (running, starting)',
      labelNames: ['service', 'state'],
      registers,
      collect: () => {
        perService.reset()
        for (const [service, c] of Object.entries(sources.services?.() ?? {})) {
          perService.set({ service, state: 'running' }, c.running)
          perService.set({ service, state: 'starting' }, c.starting)
        }
      },
    })
    const running: Gauge = new Gauge({
      name: 'mtc_allocator_instances_running',
      help: 'Instances this allocator runs',
      registers,
      collect: () => {
        running.set(sources.running())
      },
    })
    const starting: Gauge = new Gauge({
      name: 'mtc_allocator_instances_starting',
      help: 'Instance starts in flight',
      registers,
      collect: () => {
        starting.set(sources.starting())
      },
    })
    const cache: Gauge = new Gauge({
      name: 'mtc_allocator_image_cache_bytes',
      help: 'Bytes of image tarballs kept (and served) by this allocator',
      registers,
      collect: async () => {
        cache.set(await sources.cacheBytes())
      },
    })
  }
}
