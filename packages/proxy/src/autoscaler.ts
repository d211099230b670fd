import type { Logger, PeerId } from '@libp2p/interface'
import { type ScalingSettings, scalingOf } from '@mtc/hash-lookup/client'
import type { Allocator } from './allocator.ts'
import {
  PANIC_WINDOW_MS,
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
  /** Per tick: its end, its length and the load per instance over it. */
  samples: Array<{ at: number; ms: number; perInstance: number }>
  /** Each instance's busyMsNow() at the last tick, and when that was. */
  busy: Map<string, number>
  lastAt: number
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
 * this proxy had in flight over the tick, time-weighted (plus requests waiting for an
 * instance), and what the instances report in their status (every proxy's requests: the
 * instance sees its whole load; the lesser of its last two statuses) — divided by the
 * usable instances. Another instance is asked for when that is above the record's
 * `concurrency` on average over SCALE_OUT_WINDOW_MS (Knative's stable window), or above
 * twice it over PANIC_WINDOW_MS (its panic window): a backlog released at once after an
 * outage weighs its request-seconds, not its count.
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
      load = {
        samples: [],
        busy: new Map(),
        lastAt: now,
        endedAt: Number.NEGATIVE_INFINITY,
        instances: 0,
        perInstance: 0,
      }
      this.loads.set(service, load)
    }
    const usable = [...entry.instances.values()].filter((i) => i.usable)
    // Local: time-weighted over the tick (requests in flight × ms / ms), so a burst of
    // quick requests weighs what it costs, not its count (Knative measures concurrency so).
    const ms = now - load.lastAt
    let busy = 0
    const seen = new Map<string, number>()
    for (const i of entry.instances.values()) {
      const b = i.busyMsNow()
      seen.set(i.id, b)
      busy += b - (load.busy.get(i.id) ?? b)
    }
    load.busy = seen
    load.lastAt = now
    const local = this.init.waiting(service) + (ms > 0 ? busy / ms : 0)
    // Reported: a status is a snapshot; the lesser of the last two, so that a burst seen
    // by one status only is not taken for load (a new instance's first status alone, neither).
    let reported = 0
    for (const i of usable) {
      const r = i.reported
      if (r != null && now - r.at < REPORTED_LOAD_MAX_AGE_MS)
        reported += Math.min(r.inFlight, r.previous ?? 0)
    }
    load.instances = usable.length
    load.perInstance = usable.length > 0 ? Math.max(local, reported) / usable.length : 0
    if (usable.length === 0) {
      // No instance: on-demand allocation's business, not scaling's.
      load.samples = []
      return
    }
    load.samples.push({ at: now, ms, perInstance: load.perInstance })
    while (load.samples.length > 0 && now - load.samples[0].at > SCALE_OUT_WINDOW_MS)
      load.samples.shift()
    if (load.running != null || now - load.endedAt < SCALE_OUT_COOLDOWN_MS) return
    const scaling = await this.settings(service)
    const target = scaling.concurrency
    // Knative's two windows: twice the target over the short one asks at once, the target
    // over the long one asks too. A window counts once the samples cover it.
    const panic = average(load.samples, now, PANIC_WINDOW_MS) > 2 * target
    const stable = average(load.samples, now, SCALE_OUT_WINDOW_MS) > target
    if (!panic && !stable) return
    if (entry.instances.size >= scaling.maxInstances) return
    const trigger = panic ? 'panic' : 'sustained'
    const perInstance = average(load.samples, now, panic ? PANIC_WINDOW_MS : SCALE_OUT_WINDOW_MS)
    load.running = this.scaleOut(service, scaling, trigger, perInstance).finally(() => {
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

/**
 * The load per instance over the last `windowMs` (the samples weighted by their length);
 * 0 until the samples cover the window (less half a tick): no decision on a part of it.
 */
function average(
  samples: ReadonlyArray<{ at: number; ms: number; perInstance: number }>,
  now: number,
  windowMs: number,
): number {
  let sum = 0
  let ms = 0
  for (const s of samples) {
    if (now - s.at >= windowMs) continue
    sum += s.perInstance * s.ms
    ms += s.ms
  }
  return ms > 0 && ms >= windowMs - SCALE_TICK_MS / 2 ? sum / ms : 0
}
