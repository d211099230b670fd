import { randomBytes } from 'node:crypto'
import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id'
import { type ServiceRecord, scalingOf } from '@mtc/hash-lookup'
import { loadOrCreateKey } from '@mtc/p2pnode'
import { multiaddr } from '@multiformats/multiaddr'
import {
  CONTAINER_KEY_PATH,
  CONTAINER_PSK_PATH,
  CONTAINER_STOP_TIMEOUT_S,
  DEFAULT_DRAIN_TIMEOUT_MS,
  DRAIN_NOTICE_MS,
  DRAIN_POLL_MS,
  EVENTS_RETRY_MS,
  LABEL_IMAGE_ID,
  LABEL_MANAGED_BY,
  LABEL_OWNER,
  LABEL_PEER_ID,
  LABEL_PORTS,
  LABEL_SERVICE,
  PORTS_PER_INSTANCE,
  READY_POLL_INITIAL_MS,
  READY_POLL_MAX_MS,
  REMOVE_RETRY_MS,
} from '../constants.ts'
import { AllocationError } from '../errors.ts'
import type { AllocatedInstance } from '../protocol.ts'
import type { ImageProvider } from './image-provider.ts'
import type { AllocatorMetrics } from './metrics.ts'
import type { PortPool } from './port-pool.ts'
import type { ContainerInfo, ContainerRuntime } from './runtime.ts'

/** What a running instance's proxy says about itself. */
export interface InstanceProbe {
  status(
    peer: PeerId,
    signal: AbortSignal,
  ): Promise<{ ready: boolean; idleSeconds: number; inFlight?: number; draining?: boolean }>
  /** Tells the instance to take no new request (it reports `draining`). */
  drain(peer: PeerId, signal: AbortSignal): Promise<void>
}

export interface Instance {
  service: string
  containerId: string
  name: string
  peerId: PeerId
  addrs: string[]
  ports: number[]
  /** The image it runs (`sha256:...`; label mtc.image-id). */
  imageId: string
  /** Ready at the last health round (rollout.ts). */
  ready: boolean
  /** Being drained and stopped: never handed out again. */
  draining: boolean
}

export interface InstanceManagerComponents {
  runtime: ContainerRuntime
  ports: PortPool
  images: ImageProvider
  probe: InstanceProbe
  libp2p: Libp2p
  metrics: AllocatorMetrics
  /** Whether an idle instance of the service may be stopped (min instances); default yes. */
  mayReap?: (service: string, signal: AbortSignal) => Promise<boolean>
  /** The registry record of a service (throws the registry's typed errors). */
  lookup: (service: string, signal: AbortSignal) => Promise<ServiceRecord>
  log: Logger
}

export interface InstanceManagerInit {
  /** This allocator's ID (its data directory's): the value of the owner label. */
  owner: string
  /**
   * This allocator's peer ID: the value of the managed-by label. Containers labelled with
   * it but with no owner label (started before that label existed) are this allocator's too.
   */
  peerId: string
  hostIp: string
  bootstraps: string[]
  /** Host path of the swarm key file mounted into every instance (undefined: no PSK). */
  pskFile: string | undefined
  /** Where per-instance identity keys are kept. */
  stateDir: string
  maxInstances: number
  idleTimeoutMs: number
  startTimeoutMs: number
  /** A draining instance is stopped once idle, or after this long at most (--drain-timeout). */
  drainTimeoutMs?: number
}

/**
 * The instances this host runs: starts them (one start per service at a time, shared
 * by concurrent requests), caps them, reaps idle and exited ones (exits are noticed at
 * once through Docker's events), never hands out one whose container is gone, and
 * re-adopts running ones after a restart whatever the allocator's identity.
 */
export class InstanceManager {
  private readonly c: InstanceManagerComponents
  private readonly init: InstanceManagerInit
  private readonly running = new Map<string, Instance>()
  private readonly starting = new Map<string, Promise<Instance>>()
  /** Per service, the image whose rollout failed here (markFailedImage). */
  private readonly failedImages = new Map<string, string>()
  /** Containers being started, by ID: their exit ends the wait for readiness at once. */
  private readonly booting = new Map<string, AbortController>()
  /** Replacement starts in flight (rolling updates, unhealthy instances): not shared. */
  private replacing = 0

  constructor(components: InstanceManagerComponents, init: InstanceManagerInit) {
    this.c = components
    this.init = init
  }

  get runningCount(): number {
    return this.running.size
  }

  get startingCount(): number {
    return this.starting.size + this.replacing
  }

  /** Services with a running instance here. */
  services(): Set<string> {
    return new Set([...this.running.values()].map((i) => i.service))
  }

  /** The running instances of `service` (draining ones included). */
  instancesOf(service: string): Instance[] {
    return [...this.running.values()].filter((i) => i.service === service)
  }

  /** Instances this host may still start. */
  get freeCapacity(): number {
    return Math.max(0, this.init.maxInstances - this.running.size - this.startingCount)
  }

  /**
   * Starts one more instance of `service` (the record's current image), not shared with
   * allocations; resolves once it is ready. A rolling update may start one beyond
   * --max-instances when the host is full (it stops an old one right after).
   */
  async startReplacement(service: string, signal: AbortSignal): Promise<Instance> {
    this.replacing++
    try {
      return await this.start(service, signal)
    } finally {
      this.replacing--
    }
  }

  /**
   * Takes an instance out of service without failing a request: it is never handed out
   * again, is told to drain (proxies stop choosing it within their next probe), and is
   * stopped once it had no request for a second after DRAIN_NOTICE_MS — or after the
   * drain timeout at most.
   */
  async drainAndStop(instance: Instance, reason: 'replaced' | 'unhealthy'): Promise<void> {
    if (this.running.get(instance.name) !== instance || instance.draining) return
    instance.draining = true
    const { probe, log } = this.c
    const drainTimeoutMs = this.init.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS
    const deadline = AbortSignal.timeout(drainTimeoutMs)
    const t0 = performance.now()
    try {
      await probe.drain(instance.peerId, deadline)
    } catch (err) {
      log('instance %s did not take the drain request: %s', instance.name, (err as Error).message)
    }
    while (!deadline.aborted) {
      await sleep(DRAIN_POLL_MS, undefined, { signal: deadline }).catch(() => {})
      if (performance.now() - t0 < DRAIN_NOTICE_MS) continue
      const status = await probe.status(instance.peerId, deadline).catch(() => undefined)
      // Gone, or nothing in flight for a second: nobody is served by it any more.
      if (status == null || status.idleSeconds >= 1) break
    }
    log(
      'instance %s of %s drained in %d ms (%s); stopping',
      instance.name,
      instance.service,
      Math.round(performance.now() - t0),
      reason,
    )
    await this.retire(instance, reason)
  }

  /** Per service: instances running and starting on this host. */
  serviceCounts(): Record<string, { running: number; starting: number }> {
    const out: Record<string, { running: number; starting: number }> = {}
    const of = (s: string) => {
      out[s] ??= { running: 0, starting: 0 }
      return out[s]
    }
    for (const i of this.running.values()) of(i.service).running++
    for (const s of this.starting.keys()) of(s).starting++
    return out
  }

  /** The rollout of `imageId` failed here: new instances of `service` keep to the serving
   * image until the record names another one. */
  markFailedImage(service: string, imageId: string): void {
    this.failedImages.set(service, imageId)
  }

  /** The image of a ready instance of `service` that is not `except`. */
  private servingImage(service: string, except: string): string | undefined {
    for (const i of this.running.values()) {
      if (i.service === service && !i.draining && i.ready && i.imageId !== except) return i.imageId
    }
    return undefined
  }

  /**
   * An instance of `service`: a ready one of this host, the start in flight, or a new one.
   * With `scaleOut`, a new one even if this host runs some (a start in flight is still
   * shared), as long as this host runs fewer than the record's maxInstances of it.
   */
  async allocate(
    service: string,
    signal: AbortSignal,
    scaleOut = false,
  ): Promise<AllocatedInstance> {
    // During a rolling update, an instance of the current image is handed out first.
    const current = this.running.size > 0 ? await this.currentImage(service, signal) : undefined
    // An exit can be reported after the instance's clients noticed it (and asked for a
    // new one): the container is checked before it is handed out (when Docker does not
    // answer, it is handed out as before). Each round retires one.
    for (
      let existing = scaleOut ? undefined : this.find(service, current);
      existing != null;
      existing = this.find(service, current)
    ) {
      const id = existing.containerId
      if (await this.c.runtime.isRunning(id).catch(() => true)) return describe(existing, false)
      await this.retire(existing, 'exited')
    }
    const inFlight = this.starting.get(service)
    if (inFlight != null) return describe(await inFlight, false)
    if (scaleOut) {
      const { maxInstances } = scalingOf(await this.c.lookup(service, signal))
      const here = this.serviceCounts()[service]?.running ?? 0
      if (here >= maxInstances) {
        throw new AllocationError(
          'ERR_NO_CAPACITY',
          `this host runs ${here} instances of ${service}, its --max-instances`,
        )
      }
    }
    if (this.running.size + this.starting.size >= this.init.maxInstances) {
      throw new AllocationError(
        'ERR_NO_CAPACITY',
        `this host runs ${this.running.size} of at most ${this.init.maxInstances} instances`,
      )
    }
    const start = this.start(service, signal).finally(() => this.starting.delete(service))
    this.starting.set(service, start)
    return describe(await start, true)
  }

  /**
   * A running instance of `service`, not draining: best a ready one of image `imageId`,
   * then any ready one, then any (its readiness is from the last health round).
   */
  private find(service: string, imageId?: string): Instance | undefined {
    let best: Instance | undefined
    let bestRank = 0
    for (const i of this.running.values()) {
      if (i.service !== service || i.draining) continue
      const rank = (i.ready ? 2 : 0) + (imageId == null || i.imageId === imageId ? 1 : 0) + 1
      if (rank > bestRank) {
        best = i
        bestRank = rank
      }
    }
    return best
  }

  /** The record's image ID, when the registry answers. */
  private async currentImage(service: string, signal: AbortSignal): Promise<string | undefined> {
    return (await this.c.lookup(service, signal).catch(() => undefined))?.imageId
  }

  private async start(service: string, signal: AbortSignal): Promise<Instance> {
    const { metrics, log } = this.c
    const t0 = performance.now()
    const record = await this.c.lookup(service, signal)
    // After a failed rollout, new instances (scale-out, replacements) keep to the image
    // that serves, present here, until the record names another image.
    const failed = this.failedImages.get(service)
    if (failed != null && failed !== record.imageId) this.failedImages.delete(service)
    const serving = failed === record.imageId ? this.servingImage(service, failed) : undefined
    const imageId = serving ?? record.imageId
    const tImage = performance.now()
    const fetched = serving != null ? false : await this.c.images.ensure(record, signal)
    metrics.phase.observe({ phase: 'image' }, (performance.now() - tImage) / 1000)

    const ports = await this.c.ports.acquire()
    if (ports == null) throw new AllocationError('ERR_NO_CAPACITY', 'the port range is exhausted')
    const [proxyPort, servicePort, metricsPort, p2pPort] = ports
    const name = `mtc-${service}-${randomBytes(4).toString('hex')}`
    const keyDir = join(this.init.stateDir, name)
    let containerId: string | undefined
    try {
      await mkdir(keyDir, { recursive: true, mode: 0o700 })
      const peerId = peerIdFromPrivateKey(await loadOrCreateKey(join(keyDir, 'identity.key')))
      const tStart = performance.now()
      containerId = await this.c.runtime.run({
        name,
        image: imageId,
        env: {
          SERVICE_NAME: service,
          PROXY_IP: this.init.hostIp,
          PROXY_PORT: String(proxyPort),
          SERVICE_PORT: String(servicePort),
          METRICS_PORT: String(metricsPort),
          P2P_PORT: String(p2pPort),
          P2P_BOOTSTRAPS: this.init.bootstraps.join(' '),
          // Reported in the instance's status; only this allocator may make it drain.
          IMAGE_ID: imageId,
          ALLOCATOR_PEER_ID: this.init.peerId,
          ...healthEnv(record),
        },
        labels: {
          [LABEL_MANAGED_BY]: this.init.peerId,
          [LABEL_OWNER]: this.init.owner,
          [LABEL_SERVICE]: service,
          [LABEL_PEER_ID]: peerId.toString(),
          [LABEL_PORTS]: ports.join(','),
          [LABEL_IMAGE_ID]: imageId,
        },
        binds: [
          `${join(keyDir, 'identity.key')}:${CONTAINER_KEY_PATH}:ro`,
          ...(this.init.pskFile != null ? [`${this.init.pskFile}:${CONTAINER_PSK_PATH}:ro`] : []),
        ],
        cpus: record.perf.cpus,
        memoryBytes: record.perf.memoryBytes,
      })
      metrics.phase.observe({ phase: 'start' }, (performance.now() - tStart) / 1000)
      this.booting.set(containerId, new AbortController())
      const instance: Instance = {
        service,
        containerId,
        name,
        peerId,
        addrs: [`/ip4/${this.init.hostIp}/tcp/${p2pPort}/p2p/${peerId.toString()}`],
        ports,
        imageId,
        ready: false,
        draining: false,
      }
      const tReady = performance.now()
      await this.waitReady(instance, signal)
      metrics.phase.observe({ phase: 'ready' }, (performance.now() - tReady) / 1000)
      instance.ready = true
      this.running.set(name, instance)
      const total = (performance.now() - t0) / 1000
      metrics.phase.observe({ phase: 'total' }, total)
      log(
        'started %s for %s in %d ms (image %s, peer %p)',
        name,
        service,
        Math.round(total * 1000),
        fetched ? 'fetched' : 'present',
        peerId,
      )
      return instance
    } catch (err) {
      this.c.ports.release(ports)
      if (containerId != null) {
        const id = containerId
        // Docker may refuse while it is busy (removal in progress): once more, then say so.
        await this.c.runtime
          .stopAndRemove(id, 0)
          .catch(async () => {
            await sleep(REMOVE_RETRY_MS)
            await this.c.runtime.stopAndRemove(id, 0)
          })
          .catch((e: Error) => log.error('removing %s failed: %s', name, e.message))
      }
      await rm(keyDir, { recursive: true, force: true })
      throw err
    } finally {
      if (containerId != null) this.booting.delete(containerId)
    }
  }

  /** Until the instance answers through the overlay with a ready local service. */
  private async waitReady(instance: Instance, signal: AbortSignal): Promise<void> {
    const { libp2p, probe, runtime } = this.c
    await libp2p.peerStore.merge(instance.peerId, {
      multiaddrs: instance.addrs.map((a) => multiaddr(a)),
    })
    const timeout = AbortSignal.timeout(this.init.startTimeoutMs)
    const exited = this.booting.get(instance.containerId)?.signal ?? new AbortController().signal
    const deadline = AbortSignal.any([signal, timeout, exited])
    let wait = READY_POLL_INITIAL_MS
    for (let i = 0; !deadline.aborted; i++) {
      try {
        const status = await probe.status(instance.peerId, deadline)
        if (status.ready) return
      } catch {
        // not listening yet
      }
      // Every few polls, in case an exit event was missed: an exited container never gets ready.
      if (i % 8 === 7 && !(await runtime.isRunning(instance.containerId))) break
      await sleep(wait, undefined, { signal: deadline }).catch(() => {})
      wait = Math.min(wait * 2, READY_POLL_MAX_MS)
    }
    if (signal.aborted) throw signal.reason
    if (!timeout.aborted) {
      const logs = await runtime.logTail(instance.containerId, 5)
      throw new AllocationError(
        'ERR_START_FAILED',
        `instance ${instance.name} exited while starting${logs !== '' ? `: ${logs.trim().split('\n').join(' | ')}` : ''}`,
      )
    }
    throw new AllocationError(
      'ERR_TIMEOUT',
      `instance ${instance.name} not ready within ${this.init.startTimeoutMs} ms`,
    )
  }

  /**
   * Whether a managed container is this allocator's: its owner label names this data
   * directory's ID, or (started before that label existed) its managed-by label names
   * this allocator's peer ID.
   */
  private mine(c: ContainerInfo): boolean {
    const owner = c.labels[LABEL_OWNER]
    return owner != null
      ? owner === this.init.owner
      : c.labels[LABEL_MANAGED_BY] === this.init.peerId
  }

  /** The managed containers of this Docker engine that are this allocator's. */
  private async listMine(): Promise<ContainerInfo[]> {
    return (await this.c.runtime.list([LABEL_MANAGED_BY])).filter((c) => this.mine(c))
  }

  /** Re-adopts the managed containers still running; removes the managed ones that exited. */
  async adopt(): Promise<number> {
    const containers = await this.listMine()
    let adopted = 0
    for (const c of containers) {
      const ports = (c.labels[LABEL_PORTS] ?? '').split(',').map(Number)
      const service = c.labels[LABEL_SERVICE]
      const peer = c.labels[LABEL_PEER_ID]
      const peerId = parsePeerId(peer)
      if (!c.running || service == null || peerId == null || ports.length !== PORTS_PER_INSTANCE) {
        await this.remove(c.id, c.name)
        continue
      }
      const instance: Instance = {
        service,
        containerId: c.id,
        name: c.name,
        peerId,
        addrs: [`/ip4/${this.init.hostIp}/tcp/${ports[3]}/p2p/${peerId.toString()}`],
        ports,
        imageId: c.labels[LABEL_IMAGE_ID] ?? '',
        ready: true,
        draining: false,
      }
      this.c.ports.claim(ports)
      await this.c.libp2p.peerStore.merge(peerId, {
        multiaddrs: instance.addrs.map((a) => multiaddr(a)),
      })
      this.running.set(c.name, instance)
      adopted++
    }
    return adopted
  }

  /**
   * One reaping round: instances whose container is gone, or idle longer than the idle
   * timeout, are stopped and removed (their ports and keys freed).
   */
  async reap(signal: AbortSignal): Promise<void> {
    const alive = new Set((await this.listMine()).filter((c) => c.running).map((c) => c.name))
    for (const instance of [...this.running.values()]) {
      if (signal.aborted) return
      if (!alive.has(instance.name)) {
        await this.retire(instance, 'exited')
        continue
      }
      const status = await this.c.probe.status(instance.peerId, signal).catch(() => undefined)
      // Requests in flight: not idle, whatever the clock says.
      if (
        status != null &&
        (status.inFlight ?? 0) === 0 &&
        status.idleSeconds * 1000 > this.init.idleTimeoutMs
      ) {
        if (this.c.mayReap != null && !(await this.c.mayReap(instance.service, signal))) {
          this.c.metrics.keptIdle.inc()
          continue
        }
        this.c.log(
          'instance %s of %s idle for %d s; stopping',
          instance.name,
          instance.service,
          status.idleSeconds,
        )
        await this.retire(instance, 'idle')
      }
    }
  }

  /**
   * Follows Docker's events until `signal` aborts: a managed container that dies is
   * retired at once (not at the next reaping round), and one still starting stops being
   * waited for. The stream is opened again after EVENTS_RETRY_MS when it ends or fails;
   * meanwhile the reaping rounds notice exits.
   */
  async watch(signal: AbortSignal): Promise<void> {
    let failing = false
    while (!signal.aborted) {
      try {
        for await (const exit of this.c.runtime.exits(LABEL_MANAGED_BY, signal)) {
          failing = false
          this.booting.get(exit.id)?.abort()
          const instance = [...this.running.values()].find((i) => i.containerId === exit.id)
          // Not awaited: the next exit is not held up by this one's removal.
          if (instance != null) {
            this.retire(instance, 'exited', exit.action).catch((err: Error) => {
              this.c.log.error('retiring %s failed: %s', instance.name, err.message)
            })
          }
        }
      } catch (err) {
        // Once per outage, not once a second.
        if (!signal.aborted && !failing) {
          this.c.log.error(
            'Docker events: %s (reaping rounds notice exits)',
            (err as Error).message,
          )
        }
        failing = true
      }
      await sleep(EVENTS_RETRY_MS, undefined, { signal }).catch(() => {})
    }
  }

  /** Stops and removes an instance (its ports and key freed); once per instance. */
  async retire(
    instance: Instance,
    reason: 'idle' | 'exited' | 'replaced' | 'unhealthy' | 'failed',
    how?: string,
  ): Promise<void> {
    if (this.running.get(instance.name) !== instance) return
    this.running.delete(instance.name)
    this.c.metrics.reaped.inc({ reason })
    if (reason === 'exited') {
      this.c.log(
        'instance %s of %s exited%s; cleaning up',
        instance.name,
        instance.service,
        how != null ? ` (${how})` : '',
      )
    }
    await this.remove(instance.containerId, instance.name)
    this.c.ports.release(instance.ports)
  }

  private async remove(containerId: string, name: string): Promise<void> {
    await this.c.runtime
      .stopAndRemove(containerId, CONTAINER_STOP_TIMEOUT_S)
      .catch((err: Error) => {
        this.c.log.error('removing %s failed: %s', name, err.message)
      })
    await rm(join(this.init.stateDir, name), { recursive: true, force: true })
  }
}

/** The record's health check for the instance's proxy (see packages/proxy: --health-path). */
function healthEnv(record: ServiceRecord): Record<string, string> {
  if (record.healthPath == null) return {}
  return {
    HEALTH_PATH: record.healthPath,
    ...(record.healthIntervalMs != null
      ? { HEALTH_INTERVAL_MS: String(record.healthIntervalMs) }
      : {}),
    ...(record.healthThreshold != null ? { HEALTH_THRESHOLD: String(record.healthThreshold) } : {}),
  }
}

function parsePeerId(label: string | undefined): PeerId | undefined {
  try {
    return label != null ? peerIdFromString(label) : undefined
  } catch {
    return undefined
  }
}

function describe(instance: Instance, started: boolean): AllocatedInstance {
  return {
    service: instance.service,
    peerId: instance.peerId.toString(),
    addrs: instance.addrs,
    started,
  }
}
