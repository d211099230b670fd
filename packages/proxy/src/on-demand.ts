import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '@libp2p/interface'
import { raceSignal } from '@mtc/p2pnode'
import type { AllocationReason, Allocator } from './allocator.ts'
import {
  ALLOCATION_FAILURE_HOLD_MS,
  ALLOCATION_REASK_DELAY_MS,
  DEFAULT_ALLOCATION_TIMEOUT_MS,
  HANDED_OUT_SHARE_MS,
  MAX_ALLOCATION_REASKS,
  MAX_TRACKED_SERVICES,
  MAX_WAITING_PER_SERVICE,
  NEARER_ALLOCATION_INTERVAL_MS,
  REPROBE_WAIT_MS,
} from './constants.ts'
import { ProxyError } from './errors.ts'
import type { Instance, InstanceRegistry, ServiceEntry } from './instance-registry.ts'
import type { ProxyMetrics } from './metrics.ts'

export interface OnDemandInit {
  allocator: Allocator
  registry: InstanceRegistry
  metrics: ProxyMetrics
  log: Logger
  /** How long a request waits for an instance being started (`--allocation-timeout`). */
  waitTimeoutMs?: number
}

/** One allocation in flight for a service, shared by every request that needs it. */
interface Allocation {
  done: Promise<void>
  /** Set once `done` settled: the new instance (none: no allocator), or the failure. */
  result?: { instance?: Instance } | { error: ProxyError }
  /** Asked after this one handed out an instance that does not answer; shared likewise. */
  next?: Allocation
}

/** The allocation ended with an instance that answers but takes no request (yet). */
function awaited(a: Allocation): boolean {
  const r = a.result
  return r != null && 'instance' in r && r.instance?.up === true && !r.instance.usable
}

/** The allocation ended with an instance this proxy cannot reach (e.g. one that just died). */
function unreachable(a: Allocation): boolean {
  const r = a.result
  return r != null && 'instance' in r && r.instance != null && !r.instance.up
}

/**
 * Instances on demand: at most one allocation per service at a time, shared by every
 * request that needs it; requests wait for the new instance (bounded in number and time)
 * and are never dropped while it boots. An allocation that hands out an instance which
 * does not answer (its allocator has not noticed it died) is asked again, a bounded
 * number of times, rather than waited out. Allocations for a nearer instance (the best is
 * above the soft limit) run in the background; traffic moves once the new instance is
 * probed nearer.
 */
export class OnDemand {
  private readonly init: OnDemandInit
  private readonly log: Logger
  private readonly waitTimeoutMs: number
  private readonly running = new Map<string, Allocation>()
  /** Ended allocations whose instance is still awaited (HANDED_OUT_SHARE_MS), by service. */
  private readonly handedOut = new Map<string, { allocation: Allocation; at: number }>()
  private readonly waiting = new Map<string, number>()
  /** Recent failures per service, answered again without asking (ALLOCATION_FAILURE_HOLD_MS). */
  private readonly failures = new Map<string, { error: ProxyError; at: number }>()
  private readonly nearerAskedAt = new Map<string, number>()
  private readonly controller = new AbortController()

  constructor(init: OnDemandInit) {
    this.init = init
    this.log = init.log
    this.waitTimeoutMs = init.waitTimeoutMs ?? DEFAULT_ALLOCATION_TIMEOUT_MS
  }

  /** Requests of `service` waiting for an instance now. */
  waitingFor(service: string): number {
    return this.waiting.get(service) ?? 0
  }

  /** Aborts the allocations in flight; waiting requests get ERR_SHUTTING_DOWN. */
  stop(): void {
    this.controller.abort()
  }

  /** The best is above the soft limit: ask for a nearer instance, in the background. */
  requestNearer(service: string): void {
    if (this.running.has(service) || this.controller.signal.aborted) return
    const now = performance.now()
    const last = this.nearerAskedAt.get(service)
    if (last != null && now - last < NEARER_ALLOCATION_INTERVAL_MS) return
    this.nearerAskedAt.set(service, now)
    this.forgetOld(this.nearerAskedAt, NEARER_ALLOCATION_INTERVAL_MS)
    this.start(service, 'above-soft-limit')
  }

  /**
   * No instance of `entry` qualifies: starts (or joins) an allocation and waits until
   * `pick` returns an instance — the new one, or any other that became usable meanwhile.
   * Resolves undefined when there is no allocator, or when the new instance is up but
   * `pick` still refuses it (the caller answers why); rejects with a ProxyError.
   */
  async waitFor(
    entry: ServiceEntry,
    pick: () => Instance | undefined,
    signal: AbortSignal,
  ): Promise<Instance | undefined> {
    const service = entry.name
    const failure = this.failures.get(service)
    if (failure != null && performance.now() - failure.at < ALLOCATION_FAILURE_HOLD_MS) {
      throw failure.error
    }
    const count = this.waiting.get(service) ?? 0
    if (count >= MAX_WAITING_PER_SERVICE) {
      throw new ProxyError('ERR_QUEUE_FULL', `${count} requests wait for ${service}`)
    }
    this.waiting.set(service, count + 1)
    this.init.metrics.waiting.inc()
    try {
      return await this.wait(entry, pick, signal)
    } finally {
      const left = (this.waiting.get(service) ?? 1) - 1
      if (left > 0) this.waiting.set(service, left)
      else this.waiting.delete(service)
      this.init.metrics.waiting.dec()
    }
  }

  private async wait(
    entry: ServiceEntry,
    pick: () => Instance | undefined,
    signal: AbortSignal,
  ): Promise<Instance | undefined> {
    const deadline = AbortSignal.timeout(this.waitTimeoutMs)
    const stop = AbortSignal.any([deadline, signal, this.controller.signal])
    if (!this.running.has(entry.name)) {
      // An instance that was up is being probed again (its connection was just lost): a
      // live one answers within a second and is used rather than replaced.
      const reprobes = [...entry.instances.values()].flatMap((i) =>
        i.everUp && i.probing != null ? [i.probing] : [],
      )
      if (reprobes.length > 0) {
        const settled = Promise.race([Promise.allSettled(reprobes), entry.changed()])
        const bound = AbortSignal.any([stop, AbortSignal.timeout(REPROBE_WAIT_MS)])
        await raceSignal(settled, bound).catch(() => {})
        const inst = pick()
        if (inst != null) return inst
      }
    }
    let allocation =
      this.running.get(entry.name) ??
      this.stillAwaited(entry.name) ??
      this.start(entry.name, 'no-instance')
    let reasks = 0
    while (true) {
      const inst = pick()
      if (inst != null) return inst
      if (unreachable(allocation) && !this.controller.signal.aborted) {
        // Every waiter of this allocation follows the same next one.
        if (allocation.next == null && reasks < MAX_ALLOCATION_REASKS) {
          reasks++
          // The one in flight, unless that is this one (its result is set just before it ends).
          const inFlight = this.running.get(entry.name)
          allocation.next =
            inFlight != null && inFlight !== allocation
              ? inFlight
              : this.start(entry.name, 'instance-unreachable')
        }
        if (allocation.next != null) {
          allocation = allocation.next
          continue
        }
      }
      const result = allocation.result
      if (result != null && 'error' in result) throw result.error
      // Up yet refused (e.g. above the hard limit), or nothing to wait for.
      if (result != null && (result.instance == null || result.instance.usable)) return undefined
      if (this.controller.signal.aborted) throw new ProxyError('ERR_SHUTTING_DOWN')
      if (signal.aborted) throw new ProxyError('ERR_SHUTTING_DOWN', 'the client went away')
      if (deadline.aborted) {
        throw new ProxyError(
          'ERR_ALLOCATION_TIMEOUT',
          `no instance of ${entry.name} within ${this.waitTimeoutMs} ms`,
        )
      }
      // Woken by the allocation's end or by an instance becoming usable (probes). Once the
      // allocation has ended, its settled promise would wake this loop at once, forever:
      // a microtask spin that starves the probes that would make the instance usable.
      const woken =
        result == null ? Promise.race([allocation.done, entry.changed()]) : entry.changed()
      await raceSignal(woken, stop).catch(() => {})
    }
  }

  /**
   * The last allocation of `service`, ended within HANDED_OUT_SHARE_MS with an instance
   * that answers but takes no request yet: a new waiter joins it rather than asking again
   * (the allocator would hand out the same instance, or share the same start).
   */
  private stillAwaited(service: string): Allocation | undefined {
    const h = this.handedOut.get(service)
    if (h == null) return undefined
    if (performance.now() - h.at < HANDED_OUT_SHARE_MS && awaited(h.allocation)) {
      return h.allocation
    }
    this.handedOut.delete(service)
    return undefined
  }

  private start(service: string, reason: AllocationReason): Allocation {
    const allocation: Allocation = { done: Promise.resolve() }
    this.running.set(service, allocation)
    this.handedOut.delete(service)
    allocation.done = this.run(service, reason, allocation).finally(() => {
      if (this.running.get(service) !== allocation) return
      this.running.delete(service)
      if (awaited(allocation)) {
        this.handedOut.set(service, { allocation, at: performance.now() })
        this.forgetOld(this.handedOut, HANDED_OUT_SHARE_MS, (h) => h.at)
      }
    })
    return allocation
  }

  private async run(service: string, reason: AllocationReason, a: Allocation): Promise<void> {
    const { allocator, registry, metrics } = this.init
    const started = performance.now()
    let label = 'ok'
    try {
      if (reason === 'instance-unreachable') {
        // Time for the allocator to notice the death it is about to be asked about again.
        await sleep(ALLOCATION_REASK_DELAY_MS, undefined, { signal: this.controller.signal })
      }
      this.log('service %s: asking for an instance (%s)', service, reason)
      const peer = await allocator.allocate({ service, reason, signal: this.controller.signal })
      if (peer == null) {
        label = 'no-allocator'
        a.result = {}
        return
      }
      const instance = await registry.adopt(service, peer)
      a.result = { instance }
      this.failures.delete(service)
      this.log(
        'service %s: instance %s allocated in %d ms%s',
        service,
        instance.id,
        Math.round(performance.now() - started),
        instance.usable ? '' : ' (not ready yet)',
      )
    } catch (err) {
      const error =
        err instanceof ProxyError
          ? err
          : this.controller.signal.aborted
            ? new ProxyError('ERR_SHUTTING_DOWN')
            : new ProxyError('ERR_ALLOCATION_FAILED', (err as Error).message)
      label = error.code
      a.result = { error }
      // "Unknown service" is not held: the registry's answers (RegistryRequirements) are,
      // and exactly until a registration; holding it here would hide one for seconds.
      if (reason !== 'above-soft-limit' && error.code !== 'ERR_UNKNOWN_SERVICE') {
        this.failures.set(service, { error, at: performance.now() })
        this.forgetOld(this.failures, ALLOCATION_FAILURE_HOLD_MS, (f) => f.at)
      }
      this.log('service %s: allocation failed: %s', service, error.message)
    } finally {
      // Names nobody knows stay out of the labels: anyone can make up names.
      const known = label !== 'ERR_UNKNOWN_SERVICE' && label !== 'no-allocator'
      metrics.allocations.inc({ service: known ? service : '', result: label })
      metrics.allocationDuration.observe(
        { service: known ? service : '' },
        (performance.now() - started) / 1000,
      )
    }
  }

  /** Drops entries older than `ms` once a map grows: made-up names must not pile up. */
  private forgetOld<V>(
    map: Map<string, V>,
    ms: number,
    at: (v: V) => number = (v) => v as number,
  ): void {
    if (map.size < MAX_TRACKED_SERVICES) return
    const now = performance.now()
    for (const [k, v] of map) if (now - at(v) >= ms) map.delete(k)
  }
}
