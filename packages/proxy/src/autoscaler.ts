import type { Logger, PeerId } from '@libp2p/interface'
import { type ScalingSettings, scalingOf } from '@mtc/hash-lookup/client'
import type { Allocator } from './allocator.ts'
import {
  REPORTED_LOAD_MAX_AGE_MS,
  SCALE_OUT_COOLDOWN_MS,
  SCALE_OUT_WINDOW_MS,
  SCALE_TICK_MS,
} from './constants.ts'
import { ProxyError } from './errors.ts'
import type { InstanceRegistry, ServiceEntry } from './instance-registry.ts'
import type { ProxyMetrics } from './metrics.ts'
import type { RequirementsSource } from './requirements.ts'

/** What a scale-out asked of the allocators came to. */
export type ScaleOutResult =
  | { peer: PeerId }
  /** Another proxy's scale-out of the service is starting an instance already. */
  | { skipped: 'starting' }
  /** The allocators run the service's maxInstances already. */
  | { skipped: 'at-max' }

export interface AutoscalerInit {
  registry: InstanceRegistry
  allocator: Allocator
  requirementsSource: RequirementsSource
  metrics: ProxyMetrics
  log: Logger
  /** Requests of a service waiting for an instance being started (they are load too). */
  waiting: (service: string) => number
}

/** One service's recent load, as the decision sees it. */
interface Load {
  samples: Array<{ at: number; perInstance: number }>
  scaling?: ScalingSettings
  running?: Promise<void>
  /** When the last scale-out ended: the next waits SCALE_OUT_COOLDOWN_MS. */
  endedAt: number
  instances: number
  perInstance: number
}

/**
 * Scale-out on concurrency (Knative's rule, with short windows): for every service in use,
 * twice a second, load = requests in flight on its usable instances — the larger of what
 * this proxy has in flight (plus requests waiting for an instance) and what the instances
 * report in their status (every proxy's requests: the instance sees its whole load) —
 * divided by the usable instances. Another instance is asked for when that stays above the
 * record's `concurrency` for SCALE_OUT_WINDOW_MS on average, or at once above twice it.
 * One scale-out per service at a time from this proxy, then SCALE_OUT_COOLDOWN_MS for the
 * new instance to take its share. Many proxies seeing the same load do not flood: before
 * asking, the allocators' status is read (MeshAllocator.scaleOut): a start of the service in
 * flight anywhere, or `maxInstances` running, means nothing is asked.
 */
export class Autoscaler {
  private readonly init: AutoscalerInit
  private readonly log: Logger
  private readonly loads = new Map<string, Load>()
  private readonly controller = new AbortController()
  private timer?: NodeJS.Timeout

  constructor(init: AutoscalerInit) {
    this.init = init
    this.log = init.log
    init.metrics.setScalingSource(() =>
      [...this.loads].map(([service, l]) => ({
        service,
        instances: l.instances,
        perInstance: l.perInstance,
      })),
    )
  }

  start(): void {
    if (this.timer != null || this.init.allocator.scaleOut == null) return
    this.timer = setInterval(() => this.tick(), SCALE_TICK_MS)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = undefined
    this.controller.abort()
    await Promise.allSettled([...this.loads.values()].map((l) => l.running))
  }

  private tick(): void {
    const now = performance.now()
    const active = new Set<string>()
    for (const entry of this.init.registry.activeServices()) {
      active.add(entry.name)
      this.evaluate(entry, now).catch((err: Error) =>
        this.log.trace('scaling %s: %s', entry.name, err.message),
      )
    }
    for (const [name, l] of this.loads)
      if (!active.has(name) && l.running == null) this.loads.delete(name)
  }

  private async evaluate(entry: ServiceEntry, now: number): Promise<void> {
    const service = entry.name
    let load = this.loads.get(service)
    if (load == null) {
      load = { samples: [], endedAt: Number.NEGATIVE_INFINITY, instances: 0, perInstance: 0 }
      this.loads.set(service, load)
    }
    const usable = [...entry.instances.values()].filter((i) => i.usable)
    let local = this.init.waiting(service)
    let reported = 0
    for (const i of usable) {
      local += i.inFlight
      if (i.reported != null && now - i.reported.at < REPORTED_LOAD_MAX_AGE_MS)
        reported += i.reported.inFlight
    }
    load.instances = usable.length
    load.perInstance = usable.length > 0 ? Math.max(local, reported) / usable.length : 0
    if (usable.length === 0) {
      // No instance: on-demand allocation's business, not scaling's.
      load.samples = []
      return
    }
    load.samples.push({ at: now, perInstance: load.perInstance })
    while (load.samples.length > 0 && now - load.samples[0].at > SCALE_OUT_WINDOW_MS)
      load.samples.shift()
    if (load.running != null || now - load.endedAt < SCALE_OUT_COOLDOWN_MS) return
    const scaling = await this.settings(service)
    const target = scaling.concurrency
    const panic = load.perInstance > 2 * target
    const covered = now - load.samples[0].at >= SCALE_OUT_WINDOW_MS - SCALE_TICK_MS
    const average = load.samples.reduce((s, x) => s + x.perInstance, 0) / load.samples.length
    if (!panic && !(covered && average > target)) return
    if (entry.instances.size >= scaling.maxInstances) return
    const trigger = panic ? 'panic' : 'sustained'
    load.running = this.scaleOut(service, scaling, trigger, load.perInstance).finally(() => {
      const l = this.loads.get(service)
      if (l == null) return
      l.running = undefined
      l.endedAt = performance.now()
      l.samples = []
    })
  }

  private async settings(service: string): Promise<ScalingSettings> {
    const requirements = await this.init.requirementsSource.get(service).catch(() => undefined)
    return requirements?.scaling ?? scalingOf(undefined)
  }

  private async scaleOut(
    service: string,
    scaling: ScalingSettings,
    trigger: 'panic' | 'sustained',
    perInstance: number,
  ): Promise<void> {
    const { allocator, registry, metrics } = this.init
    if (allocator.scaleOut == null) return
    const started = performance.now()
    let result = 'ok'
    try {
      this.log(
        'service %s: %s requests in flight per instance (target %d): scaling out (%s)',
        service,
        perInstance.toFixed(1),
        scaling.concurrency,
        trigger,
      )
      const r = await allocator.scaleOut(service, scaling.maxInstances, this.controller.signal)
      if ('skipped' in r) {
        result = r.skipped
        this.log('service %s: scale-out skipped (%s)', service, r.skipped)
        return
      }
      const inst = await registry.adopt(service, r.peer)
      this.log(
        'service %s: scaled out to instance %s in %d ms',
        service,
        inst.id,
        Math.round(performance.now() - started),
      )
    } catch (err) {
      result = err instanceof ProxyError ? err.code : 'ERR_ALLOCATION_FAILED'
      this.log('service %s: scale-out failed: %s', service, (err as Error).message)
    } finally {
      metrics.scaleOuts.inc({ service, trigger, result })
    }
  }
}
