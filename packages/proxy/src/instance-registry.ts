import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import { probeStatusAndRtt, queryStatus, raceSignal, streamProviders } from '@mtc/p2pnode'
import {
  ACTIVE_SERVICE_MS,
  ADOPTED_INSTANCE_GRACE_MS,
  DISCOVERY_TIMEOUT_MS,
  FIRST_PROBE_ATTEMPTS,
  FIRST_PROBE_TIMEOUT_MS,
  INSTANCE_FORGET_AFTER_FAILURES,
  MAX_INSTANCES_PER_SERVICE,
  NEGATIVE_CACHE_MS,
  PROBE_INTERVAL_MS,
  PROBE_TIMEOUT_MS,
  PROVIDER_REFRESH_MS,
  RTT_SAMPLES_PER_PROBE,
  SERVICE_EXPIRY_MS,
} from './constants.ts'
import { MeshAgent } from './mesh-agent.ts'
import type { ProxyMetrics, RttSample } from './metrics.ts'
import { type Candidate, LatencyStats } from './selector.ts'

/** One instance of a service: its warm streams (the Agent) and what probes told. */
export class Instance implements Candidate {
  readonly id: string
  readonly peer: PeerId
  readonly agent: MeshAgent
  readonly stats = new LatencyStats()
  /** The last probe answered (ping and status). */
  up = false
  /** Some probe ever answered. */
  everUp = false
  /** Was usable once (so not ready now means failing, not booting). */
  everUsable = false
  /** The instance's local service accepted connections at the last status query. */
  ready = false
  /** The image the instance reported it runs (rolling updates prefer the record's). */
  imageId?: string
  /** Its allocator is stopping it: no new request goes to it. */
  draining = false
  /** Probes failed in a row. */
  failures = 0
  /** When an allocator handed it out (undefined: found in the DHT). */
  adoptedAt?: number
  /** Requests in flight the instance reported in its last status (every proxy's), and when;
   * `previous`: in the status before (a burst shows in one status only). */
  reported?: { inFlight: number; at: number; previous?: number }
  /** This proxy's attempts on it × ms, summed: its time-weighted load (the autoscaler's). */
  private busyMs = 0
  private busySince = performance.now()
  probing?: Promise<void>

  constructor(peer: PeerId, agent: MeshAgent) {
    this.peer = peer
    this.id = peer.toString()
    this.agent = agent
  }

  get usable(): boolean {
    return this.up && this.ready && !this.draining
  }

  /** An attempt of this proxy on the instance starts (counted in its load)... */
  begin(): void {
    this.accrue()
    this.stats.begin()
  }

  /** ...and ends. */
  end(): void {
    this.accrue()
    this.stats.end()
  }

  /** Requests in flight × ms, summed until now (a difference over a window / its length is
   * the average in flight there, as Knative measures concurrency). */
  busyMsNow(): number {
    return this.busyMs + this.inFlight * (performance.now() - this.busySince)
  }

  private accrue(): void {
    this.busyMs = this.busyMsNow()
    this.busySince = performance.now()
  }

  /** Attempts of this proxy on the instance now. */
  get inFlight(): number {
    return this.stats.inFlight
  }
}

/** Instances of one service, discovered in the DHT and probed while the service is used. */
export class ServiceEntry {
  readonly name: string
  readonly instances = new Map<string, Instance>()
  lastUsed = performance.now()
  lastLookup = Number.NEGATIVE_INFINITY
  /** The DHT ever named a provider: the service exists (503 rather than 404). */
  everFound = false
  lookup?: Promise<void>
  /** The instance the last request preferred, to count changes. */
  preferred?: string
  private waiters: Array<() => void> = []

  constructor(name: string) {
    this.name = name
  }

  hasUsable(): boolean {
    for (const i of this.instances.values()) if (i.usable) return true
    return false
  }

  /** No instance is usable, and some were and now drain or fail their health check. */
  degraded(): boolean {
    if (this.hasUsable()) return false
    for (const i of this.instances.values()) if (i.draining || (i.everUsable && i.up)) return true
    return false
  }

  /** Resolves at the next notify() (an instance became usable). */
  changed(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve))
  }

  notify(): void {
    const waiters = this.waiters
    this.waiters = []
    for (const w of waiters) w()
  }
}

export interface InstanceRegistryInit {
  libp2p: Libp2p
  log: Logger
  metrics: ProxyMetrics
}

/**
 * Where the instances of each service are: DHT provider records (cached per service,
 * looked up again in the background while the service is in use), each instance used
 * only once it answered a probe (dial + ping RTT + status), then probed every second.
 */
export class InstanceRegistry {
  private readonly init: InstanceRegistryInit
  private readonly log: Logger
  private readonly services = new Map<string, ServiceEntry>()
  private readonly controller = new AbortController()
  private timer?: NodeJS.Timeout

  constructor(init: InstanceRegistryInit) {
    this.init = init
    this.log = init.log
    init.metrics.setRttSource(() => this.rttSamples())
  }

  start(): void {
    if (this.timer != null) return
    this.timer = setInterval(() => this.tick(), PROBE_INTERVAL_MS)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    if (this.timer != null) clearInterval(this.timer)
    this.timer = undefined
    this.controller.abort()
    const pending: Array<Promise<void>> = []
    for (const e of this.services.values()) {
      if (e.lookup != null) pending.push(e.lookup)
      for (const i of e.instances.values()) {
        if (i.probing != null) pending.push(i.probing)
        i.agent.destroy()
      }
      e.notify()
    }
    this.services.clear()
    await Promise.allSettled(pending)
  }

  /**
   * The entry of `name`, once it has a usable instance or discovery gave up (bounded by
   * DISCOVERY_TIMEOUT_MS). A cold service waits for its first instance to answer only.
   */
  async resolve(name: string): Promise<ServiceEntry> {
    const e = this.entry(name)
    e.lastUsed = performance.now()
    if (e.hasUsable() || this.controller.signal.aborted) return e
    if (e.lookup == null && performance.now() - e.lastLookup > NEGATIVE_CACHE_MS) {
      this.startLookup(e)
    }
    if (e.lookup != null) {
      await raceSignal(
        Promise.race([e.lookup, e.changed()]),
        AbortSignal.timeout(DISCOVERY_TIMEOUT_MS),
      ).catch(() => {})
    }
    return e
  }

  /**
   * Adds an instance learnt elsewhere (an allocator) and waits for its first probes; it
   * may not be usable yet (still booting): it is probed every second from then on.
   */
  async adopt(name: string, peer: PeerId): Promise<Instance> {
    const e = this.entry(name)
    e.everFound = true
    e.lastUsed = performance.now()
    const inst = e.instances.get(peer.toString()) ?? this.add(e, peer)
    inst.adoptedAt ??= performance.now()
    await this.probe(e, inst)
    return inst
  }

  /** The services used within ACTIVE_SERVICE_MS (those probed in the background). */
  *activeServices(): Iterable<ServiceEntry> {
    const now = performance.now()
    for (const e of this.services.values()) if (now - e.lastUsed <= ACTIVE_SERVICE_MS) yield e
  }

  /**
   * The registry names `imageId` as the service's image and no instance known runs it (a
   * rolling update began): look for new instances now rather than at the next refresh.
   */
  lookForImage(name: string, imageId: string): void {
    const e = this.services.get(name)
    if (e == null || e.lookup != null) return
    let reporting = false
    for (const i of e.instances.values()) {
      if (i.imageId === imageId) return
      if (i.imageId != null) reporting = true
    }
    // Instances that do not report their image (started by an older allocator) would make
    // this look up every second for ever: the periodic refresh finds their replacements.
    if (reporting && performance.now() - e.lastLookup > NEGATIVE_CACHE_MS) this.startLookup(e)
  }

  /** A request to `inst` failed at the connection level: probe it again now. */
  suspect(name: string, inst: Instance): void {
    const e = this.services.get(name)
    if (e == null) return
    inst.up = false
    void this.probe(e, inst)
  }

  private entry(name: string): ServiceEntry {
    let e = this.services.get(name)
    if (e == null) {
      e = new ServiceEntry(name)
      this.services.set(name, e)
    }
    return e
  }

  private startLookup(e: ServiceEntry): void {
    e.lookup = this.lookup(e).finally(() => {
      e.lookup = undefined
    })
  }

  private async lookup(e: ServiceEntry): Promise<void> {
    const { libp2p } = this.init
    const probes: Array<Promise<void>> = []
    for (const inst of e.instances.values()) {
      if (!inst.up) probes.push(this.probe(e, inst))
    }
    const signal = AbortSignal.any([
      AbortSignal.timeout(DISCOVERY_TIMEOUT_MS),
      this.controller.signal,
    ])
    try {
      for await (const peer of streamProviders(libp2p, 'service', e.name, { signal })) {
        e.everFound = true
        if (e.instances.has(peer.toString())) continue
        if (e.instances.size >= MAX_INSTANCES_PER_SERVICE) continue
        const inst = this.add(e, peer)
        this.log('service %s: found instance %s', e.name, inst.id)
        probes.push(this.probe(e, inst))
      }
    } catch (err) {
      if (!this.controller.signal.aborted) {
        this.log.trace('service %s: lookup ended: %s', e.name, (err as Error).message)
      }
    }
    await Promise.allSettled(probes)
    e.lastLookup = performance.now()
    e.notify()
  }

  private add(e: ServiceEntry, peer: PeerId): Instance {
    const agent = new MeshAgent({
      libp2p: this.init.libp2p,
      peer,
      onStreamOpened: () => this.init.metrics.streamsOpened.inc({ service: e.name }),
    })
    const inst = new Instance(peer, agent)
    e.instances.set(inst.id, inst)
    return inst
  }

  private forget(e: ServiceEntry, inst: Instance, why: string): void {
    if (e.instances.get(inst.id) !== inst) return
    e.instances.delete(inst.id)
    inst.agent.destroy()
    this.log('service %s: forgot instance %s (%s)', e.name, inst.id, why)
  }

  /** Ping RTT and status of one instance; concurrent calls share one probe. */
  private probe(e: ServiceEntry, inst: Instance): Promise<void> {
    if (inst.probing != null) return inst.probing
    inst.probing = this.probeWithRetries(e, inst).finally(() => {
      inst.probing = undefined
    })
    return inst.probing
  }

  /** A new instance gets a few short probes: a cold request is waiting for this one. */
  private async probeWithRetries(e: ServiceEntry, inst: Instance): Promise<void> {
    if (inst.everUp) {
      await this.runProbe(e, inst, PROBE_TIMEOUT_MS)
      return
    }
    for (let i = 0; i < FIRST_PROBE_ATTEMPTS && !this.controller.signal.aborted; i++) {
      // The last one gets the full timeout: a first connection that takes longer than the
      // short one (a loaded host, a far link) would otherwise be cut again and again.
      const last = i === FIRST_PROBE_ATTEMPTS - 1
      if (await this.runProbe(e, inst, last ? PROBE_TIMEOUT_MS : FIRST_PROBE_TIMEOUT_MS)) return
      if (!e.instances.has(inst.id)) return
    }
  }

  /** One probe; true when the instance answered. */
  private async runProbe(e: ServiceEntry, inst: Instance, timeoutMs: number): Promise<boolean> {
    const { libp2p } = this.init
    const signal = AbortSignal.any([this.controller.signal, AbortSignal.timeout(timeoutMs)])
    try {
      const { status, rttMs } = await probeStatusAndRtt(libp2p, inst.peer, queryStatus, {
        signal,
        samples: RTT_SAMPLES_PER_PROBE,
      })
      if (status.service !== e.name) {
        // A stale provider record: the peer now runs something else.
        this.forget(e, inst, `it serves ${status.service}`)
        return true
      }
      const wasUsable = inst.usable
      inst.stats.recordRtt(rttMs)
      inst.up = true
      inst.everUp = true
      inst.ready = status.ready
      inst.imageId = status.imageId
      if (status.draining === true && !inst.draining) {
        // Its replacement is (about to be) announced: find it before this one is gone.
        this.log('service %s: instance %s drains', e.name, inst.id)
        if (e.lookup == null) this.startLookup(e)
      }
      inst.draining = status.draining === true
      inst.failures = 0
      if (status.inFlight != null)
        inst.reported = {
          inFlight: status.inFlight,
          at: performance.now(),
          previous: inst.reported?.inFlight,
        }
      if (inst.usable) inst.everUsable = true
      if (inst.usable && !wasUsable) {
        this.log('service %s: instance %s usable, rtt %s ms', e.name, inst.id, rttMs.toFixed(2))
        e.notify()
      } else if (!inst.ready && wasUsable) {
        this.log('service %s: instance %s not ready', e.name, inst.id)
      }
      return true
    } catch (err) {
      if (this.controller.signal.aborted) return false
      if (inst.up || inst.failures === 0)
        this.log('service %s: instance %s down: %s', e.name, inst.id, (err as Error).message)
      inst.up = false
      inst.failures++
      // An instance an allocator just handed out is alive (the allocator saw it ready):
      // not forgotten while this proxy's first connection to it is still being made.
      const fresh =
        inst.adoptedAt != null &&
        !inst.everUp &&
        performance.now() - inst.adoptedAt < ADOPTED_INSTANCE_GRACE_MS
      if (inst.failures >= INSTANCE_FORGET_AFTER_FAILURES && !fresh) {
        this.forget(e, inst, `${inst.failures} probes failed`)
      }
      return false
    }
  }

  private tick(): void {
    this.countInstances()
    const now = performance.now()
    for (const e of this.services.values()) {
      const unused = now - e.lastUsed
      if (unused > SERVICE_EXPIRY_MS) {
        for (const inst of e.instances.values()) inst.agent.destroy()
        this.services.delete(e.name)
        continue
      }
      if (unused > ACTIVE_SERVICE_MS) continue
      for (const inst of e.instances.values()) void this.probe(e, inst)
      // Instances that served and are now all draining or failing their health check: their
      // replacements are looked for every second, not only at the periodic refresh.
      const refreshMs = e.degraded() ? NEGATIVE_CACHE_MS : PROVIDER_REFRESH_MS
      if (e.lookup == null && now - e.lastLookup > refreshMs) this.startLookup(e)
    }
  }

  /** Instances known per service, image and state, for mtc_proxy_instances. */
  private countInstances(): void {
    const gauge = this.init.metrics.instancesByImage
    gauge.reset()
    for (const e of this.services.values()) {
      for (const i of e.instances.values()) {
        const state = i.draining ? 'draining' : i.usable ? 'usable' : 'down'
        const image = (i.imageId ?? 'unknown').replace(/^sha256:/, '').slice(0, 12)
        gauge.inc({ service: e.name, image, state })
      }
    }
  }

  private rttSamples(): RttSample[] {
    const out: RttSample[] = []
    for (const e of this.services.values()) {
      for (const i of e.instances.values()) {
        if (i.stats.rttMs != null) {
          out.push({
            service: e.name,
            instance: i.id,
            seconds: i.stats.rttMs / 1000,
            inFlight: i.inFlight,
            expectedSeconds: i.stats.score() / 1000,
          })
        }
      }
    }
    return out
  }
}
