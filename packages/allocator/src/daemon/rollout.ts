import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '@libp2p/interface'
import type { ServiceRecord } from '@mtc/hash-lookup'
import { ROLLOUT_CHECK_INTERVAL_MS, UNHEALTHY_ROUNDS } from '../constants.ts'
import type { InstanceReport, InstancesReply, RolloutReport } from '../protocol.ts'
import type { Instance, InstanceManager, InstanceProbe } from './instances.ts'
import type { AllocatorMetrics } from './metrics.ts'

export interface RolloutDriverComponents {
  manager: InstanceManager
  probe: InstanceProbe
  /** The registry record (a cache kept exact by hl-service's change notices). */
  lookup: (service: string, signal: AbortSignal) => Promise<ServiceRecord>
  metrics: AllocatorMetrics
  log: Logger
}

/**
 * Rolling updates and health replacement of the instances this allocator owns, once a
 * second per service it runs:
 *
 * - an instance whose image is not the record's (a new version, or a rollback) is
 *   replaced: as many new instances as old ones are started at once (bounded by free
 *   capacity, at least one), and each one that gets ready (health check included) lets one
 *   old instance drain and stop (InstanceManager.drainAndStop). A new instance that never
 *   gets ready (start timeout, exit) is removed, the old ones keep serving and the rollout
 *   of that image is "failed": not tried again until the record changes.
 * - an instance that was ready and reports not ready for UNHEALTHY_ROUNDS rounds (its
 *   health path fails) gets a replacement, then is stopped.
 */
export class RolloutDriver {
  private readonly c: RolloutDriverComponents
  /** The last rollout of each service. */
  private readonly rollouts = new Map<string, RolloutReport>()
  private readonly busy = new Map<string, Promise<void>>()
  /** Health rounds in a row each instance (by name) was not ready. */
  private readonly notReady = new Map<string, number>()

  constructor(components: RolloutDriverComponents) {
    this.c = components
  }

  /** Checks every ROLLOUT_CHECK_INTERVAL_MS until `signal` aborts; waits for work in flight. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.round(signal).catch((err: Error) =>
        this.c.log.error('rollout round failed: %s', err.message),
      )
      await sleep(ROLLOUT_CHECK_INTERVAL_MS, undefined, { signal }).catch(() => {})
    }
    await Promise.allSettled(this.busy.values())
  }

  /** What `hl-cli rollout status` asks of this allocator. */
  report(service: string): InstancesReply {
    const instances: InstanceReport[] = this.c.manager.instancesOf(service).map((i) => ({
      peerId: i.peerId.toString(),
      imageId: i.imageId,
      ready: i.ready,
      draining: i.draining,
    }))
    const rollout = this.rollouts.get(service)
    return rollout != null ? { instances, rollout } : { instances }
  }

  /** Rollout state per service for the metrics: 0 none or done, 1 rolling, 2 failed. */
  states(): Array<{ service: string; state: number }> {
    const value = { done: 0, rolling: 1, failed: 2 } as const
    return [...this.rollouts].map(([service, r]) => ({ service, state: value[r.state] }))
  }

  /** One round: each service not already being worked on is checked (not awaited). */
  async round(signal: AbortSignal): Promise<void> {
    const { manager } = this.c
    const all = [...manager.services()].flatMap((s) => manager.instancesOf(s))
    await Promise.all(all.map((i) => this.health(i, signal)))
    for (const service of manager.services()) {
      if (this.busy.has(service) || signal.aborted) continue
      const work = this.check(service, signal)
        .catch((err: Error) => this.c.log.error('rollout of %s: %s', service, err.message))
        .finally(() => this.busy.delete(service))
      this.busy.set(service, work)
    }
  }

  /** The instance's readiness now (its own status: health check or TCP). */
  private async health(instance: Instance, signal: AbortSignal): Promise<void> {
    if (instance.draining) return
    const status = await this.c.probe
      .status(instance.peerId, AbortSignal.any([signal, AbortSignal.timeout(2_000)]))
      .catch(() => undefined)
    if (status == null) return // unreachable: the reaper and Docker's events deal with it
    instance.ready = status.ready
    const rounds = status.ready ? 0 : (this.notReady.get(instance.name) ?? 0) + 1
    if (rounds === 0) this.notReady.delete(instance.name)
    else this.notReady.set(instance.name, rounds)
  }

  private async check(service: string, signal: AbortSignal): Promise<void> {
    const { manager } = this.c
    const record = await this.c.lookup(service, signal).catch(() => undefined)
    if (record == null) return
    const live = manager.instancesOf(service).filter((i) => !i.draining)
    const old = live.filter((i) => i.imageId !== record.imageId)
    const last = this.rollouts.get(service)
    if (old.length > 0) {
      // A failed image is not tried again: only a new record (another image) retries.
      if (last?.imageId === record.imageId && last.state !== 'rolling') return
      await this.rollOut(service, record, old, signal)
      return
    }
    if (last?.state === 'rolling' && last.imageId === record.imageId) this.finish(last, 'done')
    const sick = live.filter((i) => (this.notReady.get(i.name) ?? 0) >= UNHEALTHY_ROUNDS)
    for (const instance of sick) await this.replaceUnhealthy(instance, signal)
  }

  private async rollOut(
    service: string,
    record: ServiceRecord,
    old: Instance[],
    signal: AbortSignal,
  ): Promise<void> {
    const { manager, log, metrics } = this.c
    const rollout: RolloutReport = {
      imageId: record.imageId,
      version: record.version,
      state: 'rolling',
      startedAt: new Date().toISOString(),
    }
    this.rollouts.set(service, rollout)
    const t0 = performance.now()
    log(
      'rolling %s out to version %d (%s): %d old instance(s)',
      service,
      record.version,
      record.imageId,
      old.length,
    )
    let pending = old
    while (pending.length > 0 && !signal.aborted) {
      // Surge: one new instance per old one, as capacity allows (at least one).
      const batch = pending.slice(0, Math.max(1, Math.min(pending.length, manager.freeCapacity)))
      const started = await Promise.allSettled(
        batch.map(() => manager.startReplacement(service, signal)),
      )
      const drains: Array<Promise<void>> = []
      let failure: Error | undefined
      started.forEach((s, i) => {
        // A new instance is ready: one old one makes way for it.
        if (s.status === 'fulfilled') drains.push(manager.drainAndStop(batch[i]!, 'replaced'))
        else failure ??= s.reason as Error
      })
      await Promise.all(drains)
      if (failure != null) {
        rollout.message = `new instance of ${record.image} not ready: ${failure.message}`
        log.error(
          'rollout of %s to version %d failed: %s',
          service,
          record.version,
          failure.message,
        )
        this.finish(rollout, 'failed')
        manager.markFailedImage(service, record.imageId)
        metrics.rollouts.inc({ outcome: 'failed' })
        return
      }
      const current = await this.c.lookup(service, signal).catch(() => record)
      if (current.imageId !== record.imageId) return // a newer version: the next round
      pending = manager
        .instancesOf(service)
        .filter((i) => !i.draining && i.imageId !== record.imageId)
    }
    if (signal.aborted) return
    this.finish(rollout, 'done')
    metrics.rollouts.inc({ outcome: 'done' })
    metrics.rolloutDuration.observe((performance.now() - t0) / 1000)
    log('rolled %s out to version %d in %d ms', service, record.version, performance.now() - t0)
  }

  private async replaceUnhealthy(instance: Instance, signal: AbortSignal): Promise<void> {
    const { manager, log, metrics } = this.c
    log('instance %s of %s fails its health check: replacing it', instance.name, instance.service)
    metrics.unhealthy.inc({ service: instance.service })
    this.notReady.delete(instance.name)
    try {
      await manager.startReplacement(instance.service, signal)
    } catch (err) {
      // Kept: it gets no traffic while not ready, and may recover (a host under load)
      // whereas stopping it could leave the service with no instance at all.
      log.error('no replacement for %s (kept): %s', instance.name, (err as Error).message)
      return
    }
    await manager.drainAndStop(instance, 'unhealthy')
  }

  private finish(rollout: RolloutReport, state: 'done' | 'failed'): void {
    rollout.state = state
    rollout.endedAt = new Date().toISOString()
  }
}
