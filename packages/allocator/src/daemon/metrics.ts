import { Counter, Gauge, Histogram, type Registry } from 'prom-client'

/** The allocator's own metrics (`mtc_allocator_*`), beside the libp2p stack's. */
export class AllocatorMetrics {
  readonly allocations: Counter<'outcome'>
  readonly phase: Histogram<'phase'>
  readonly reaped: Counter<'reason'>
  readonly minInstanceStarts: Counter<'where'>
  readonly keptIdle: Counter
  readonly rollouts: Counter<'outcome'>
  readonly rolloutDuration: Histogram
  readonly unhealthy: Counter<'service'>

  constructor(
    registry: Registry,
    sources: {
      running: () => number
      starting: () => number
      cacheBytes: () => Promise<number>
      services?: () => Record<string, { running: number; starting: number }>
      /** Running instances per service and image, and rollout states (rollout.ts). */
      instances?: () => Array<{ service: string; imageId: string; draining: boolean }>
      rolloutStates?: () => Array<{ service: string; state: number }>
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
      help: 'Instances stopped by the allocator, by reason (idle, exited, replaced, unhealthy)',
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
      name: 'mtc_allocator_service_instances_by_state',
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
    this.rollouts = new Counter({
      name: 'mtc_allocator_rollouts_total',
      help: 'Rolling updates of a service on this host, by outcome (done, failed)',
      labelNames: ['outcome'],
      registers,
    })
    this.rolloutDuration = new Histogram({
      name: 'mtc_allocator_rollout_duration_seconds',
      help: 'Rolling updates that completed, from the new version seen to the last old instance stopped',
      buckets: [1, 2.5, 5, 10, 20, 30, 60, 120, 300],
      registers,
    })
    this.unhealthy = new Counter({
      name: 'mtc_allocator_unhealthy_replacements_total',
      help: 'Instances replaced because they stopped passing their health check',
      labelNames: ['service'],
      registers,
    })
    const byImage: Gauge<'service' | 'image' | 'state'> = new Gauge({
      name: 'mtc_allocator_service_instances',
      help: 'Instances this allocator runs, by service, image ID (short) and state (serving, draining)',
      labelNames: ['service', 'image', 'state'],
      registers,
      collect: () => {
        byImage.reset()
        for (const i of sources.instances?.() ?? []) {
          const image = i.imageId.replace(/^sha256:/, '').slice(0, 12)
          byImage.inc({ service: i.service, image, state: i.draining ? 'draining' : 'serving' })
        }
      },
    })
    const rolloutState: Gauge<'service'> = new Gauge({
      name: 'mtc_allocator_rollout_state',
      help: 'Last rollout of each service on this host: 0 done, 1 rolling, 2 failed',
      labelNames: ['service'],
      registers,
      collect: () => {
        rolloutState.reset()
        for (const r of sources.rolloutStates?.() ?? [])
          rolloutState.set({ service: r.service }, r.state)
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
