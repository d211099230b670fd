import { setTimeout as sleep } from 'node:timers/promises'
import type { Libp2p, Logger } from '@libp2p/interface'
import { type Allocator, noAllocator } from './allocator.ts'
import { Autoscaler } from './autoscaler.ts'
import type { ClientResponse } from './client-response.ts'
import {
  DEFAULT_UPSTREAM_TIMEOUT_MS,
  MAX_ATTEMPTS,
  PROBE_INTERVAL_MS,
  RTT_SETTLE_WAIT_MS,
} from './constants.ts'
import { ProxyError, sendError } from './errors.ts'
import type { GatewayRequest } from './gateway-request.ts'
import { gatewayRequestHeaders } from './http-headers.ts'
import type { Instance, InstanceRegistry } from './instance-registry.ts'
import type { MeshStream } from './mesh-agent.ts'
import { exchange, type Outcome, type UpgradeRequest } from './mesh-exchange.ts'
import type { ProxyMetrics } from './metrics.ts'
import { OnDemand } from './on-demand.ts'
import { RequestBody } from './request-body.ts'
import type { Framing } from './request-framing.ts'
import { requestHead } from './request-head.ts'
import {
  mergeRequirements,
  noRequirementsSource,
  type Requirements,
  type RequirementsSource,
} from './requirements.ts'
import { preferImage, type Ranking, rank } from './selector.ts'

/** Methods whose repetition has the effect of one request (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])

/** An upgrade request's bytes after its head are not parsed: they go on
 * raw (UpgradeRequest.head, then the splice), never as a body the gateway frames. */
const RAW: Framing = { kind: 'none' }

export interface ForwarderInit {
  /** The mesh node: tells whether the connection to an instance is still open. */
  libp2p?: Libp2p
  registry: InstanceRegistry
  metrics: ProxyMetrics
  log: Logger
  /** `--config` requirements, for every service. */
  requirements?: Requirements
  /** Per-service overrides (the hash-lookup record). */
  requirementsSource?: RequirementsSource
  allocator?: Allocator
  /** How long a request waits for an instance being started (`--allocation-timeout`). */
  allocationTimeoutMs?: number
  upstreamTimeoutMs?: number
}

/**
 * One gateway request: select an instance (maybe ask for an allocation), forward, and
 * on failure retry on the next best instance when that is safe — always when nothing
 * reached the service, for idempotent methods also after a connection loss — while the
 * body can be replayed and attempts remain.
 */
export class Forwarder {
  private readonly registry: InstanceRegistry
  private readonly metrics: ProxyMetrics
  private readonly log: Logger
  private readonly requirements: Requirements
  private readonly requirementsSource: RequirementsSource
  private readonly onDemand: OnDemand
  private readonly upstreamTimeoutMs: number
  private readonly libp2p?: Libp2p
  private readonly autoscaler: Autoscaler

  constructor(init: ForwarderInit) {
    this.libp2p = init.libp2p
    this.registry = init.registry
    this.metrics = init.metrics
    this.log = init.log
    this.requirements = init.requirements ?? {}
    this.requirementsSource = init.requirementsSource ?? noRequirementsSource
    this.onDemand = new OnDemand({
      allocator: init.allocator ?? noAllocator,
      registry: init.registry,
      metrics: init.metrics,
      log: init.log,
      waitTimeoutMs: init.allocationTimeoutMs,
    })
    this.upstreamTimeoutMs = init.upstreamTimeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS
    this.autoscaler = new Autoscaler({
      registry: init.registry,
      allocator: init.allocator ?? noAllocator,
      requirementsSource: this.requirementsSource,
      metrics: init.metrics,
      log: init.log,
      waiting: (service) => this.onDemand.waitingFor(service),
    })
  }

  /** Scaling starts watching the load of the services in use. */
  start(): void {
    this.autoscaler.start()
  }

  /** Requests waiting for an instance being started fail (ERR_SHUTTING_DOWN); requests
   * already forwarded go on. */
  stop(): void {
    this.onDemand.stop()
    void this.autoscaler.stop()
  }

  async forward(
    service: string,
    path: string,
    req: GatewayRequest,
    res: ClientResponse,
    framing: Framing,
    upgrade?: UpgradeRequest,
  ): Promise<void> {
    const method = req.method
    const headers = gatewayRequestHeaders(req, service, framing)
    if (upgrade != null)
      headers.push('Connection', 'Upgrade', 'Upgrade', req.header('upgrade') ?? '')
    const head = requestHead(method, path, headers)
    const bodyFraming = upgrade == null ? framing : RAW
    const body = new RequestBody(req, bodyFraming)
    const tried = new Set<string>()
    let inst: Instance = await this.choose(service, tried, res)
    for (let attempt = 1; ; attempt++) {
      // A client gone meanwhile is not forwarded (its 'close' already fired).
      if (res.destroyed) return
      // Counted in the instance's load from now until the attempt ends (see selector.ts).
      inst.begin()
      let outcome: Outcome
      try {
        outcome = await this.attempt(inst, method, head, body, bodyFraming, res, upgrade)
      } finally {
        inst.end()
      }
      if (outcome.kind === 'relayed') return
      // A warm stream the service had just closed: the request goes again on a new stream
      // of the same instance when its method allows (nothing says the service saw it).
      if (
        outcome.stale === true &&
        attempt < MAX_ATTEMPTS &&
        IDEMPOTENT.has(method) &&
        body.replayable &&
        !res.destroyed
      ) {
        this.log.trace('%s %s: stale stream to %s, again', method, service, inst.id)
        continue
      }
      // A reset stream or a failed dial: the instance may have died. It is not used until a
      // probe says it lives (then a retry may go to it again), and a retry that finds no
      // other may wait for a new one. A busy instance (no free stream) answered: not suspect.
      const lost = outcome.error.code === 'ERR_INSTANCE_UNREACHABLE'
      if (!lost) tried.add(inst.id)
      if (lost || (!outcome.delivered && outcome.error.code !== 'ERR_INSTANCE_BUSY'))
        this.registry.suspect(service, inst)
      const retry =
        attempt < MAX_ATTEMPTS &&
        body.replayable &&
        !res.destroyed &&
        (!outcome.delivered || IDEMPOTENT.has(method))
      const next = retry
        ? await this.choose(service, tried, res, lost).catch(() => undefined)
        : undefined
      if (next == null) {
        this.log('%s %s/%s failed on %s: %s', method, service, path, inst.id, outcome.error.message)
        sendError(res, outcome.error)
        return
      }
      this.metrics.retries.inc({ service })
      this.log.trace('retrying %s %s on %s: %s', method, service, next.id, outcome.error.message)
      inst = next
    }
  }

  /**
   * The best usable instance not in `exclude`, or the 404/503 error saying why not. When
   * none qualifies (on the first attempt, or after the connection to an instance was
   * lost: `afterLoss`), an instance is allocated and waited for; when the best is above
   * the soft limit, a nearer one is allocated in the background.
   */
  private async choose(
    service: string,
    exclude: ReadonlySet<string>,
    res: ClientResponse,
    afterLoss = false,
  ): Promise<Instance> {
    // The registry first: a name it does not know is refused before any DHT lookup. Its
    // answer may come while instances are looked for (a proxy's first requests): asked again.
    const early = await this.requirementsSource.get(service)
    const entry = await this.registry.resolve(service)
    const override = early ?? (await this.requirementsSource.get(service))
    const requirements = mergeRequirements(this.requirements, override)
    const { imageId } = requirements
    if (imageId != null) this.registry.lookForImage(service, imageId)
    const pick = (): Ranking<Instance> =>
      rank(preferImage(entry.instances.values(), imageId, exclude), requirements, exclude)
    let ranking = pick()
    if (ranking.ranked.length === 0 && ranking.unsettled > 0) {
      // Instances measured above the hard limit on too few probes: their next probes say
      // whether they are really that far, before another instance is asked for.
      ranking = await whileConnected(res, (signal) => settle(pick, signal))
    }
    if (ranking.ranked.length === 0 && (exclude.size === 0 || afterLoss)) {
      const inst = await whileConnected(res, (signal) =>
        this.onDemand.waitFor(entry, () => pick().ranked[0], signal),
      )
      ranking =
        inst != null ? { ranked: [inst], tooFar: 0, unsettled: 0, aboveSoft: false } : pick()
    } else if (ranking.aboveSoft) {
      this.onDemand.requestNearer(service)
    }
    const best = ranking.ranked[0]
    if (best == null) {
      const { tooFar } = ranking
      if (tooFar > 0) throw new ProxyError('ERR_INSTANCES_TOO_FAR', `${tooFar} instance(s)`)
      if (entry.everFound || entry.instances.size > 0) throw new ProxyError('ERR_NO_INSTANCE')
      throw new ProxyError('ERR_UNKNOWN_SERVICE', service)
    }
    // The choice at no load (the nearest/fastest): under load it moves with every request.
    const unloaded = ranking.ranked.every((i) => i.inFlight === 0)
    if (exclude.size === 0 && unloaded && entry.preferred !== best.id) {
      if (entry.preferred != null) this.metrics.instanceChanges.inc({ service })
      this.log('service %s: now preferring instance %s', service, best.id)
      entry.preferred = best.id
    }
    return best
  }

  /**
   * One attempt on one instance: a stream (warm, or new once the instance reached its
   * service), then the exchange. The one place where an attempt on an instance starts and
   * ends.
   */
  private async attempt(
    inst: Instance,
    method: string,
    head: Buffer,
    body: RequestBody,
    framing: Framing,
    res: ClientResponse,
    upgrade?: UpgradeRequest,
  ): Promise<Outcome> {
    let stream: MeshStream
    try {
      stream = await inst.agent.acquire()
    } catch (err) {
      // Nothing was sent: the request may go elsewhere whatever its method.
      const error =
        err instanceof ProxyError
          ? err
          : new ProxyError('ERR_INSTANCE_UNREACHABLE', `${inst.id}: ${(err as Error).message}`)
      if (error.code !== 'ERR_INSTANCE_BUSY') inst.stats.recordError()
      return { kind: 'failed', delivered: false, error }
    }
    // Timed from the request's first byte: a new stream's set-up (dial, negotiation, the
    // instance's connection to its service) is not the instance's answer time. (Streams
    // idle only seconds, so requests on new streams are common for an instance not used
    // lately: they must measure it too, or a slow one is never seen as slow.)
    const sent = performance.now()
    if (res.destroyed) {
      inst.agent.release(stream)
      return { kind: 'relayed' }
    }
    const outcome = await exchange({
      stream,
      method,
      head,
      body,
      framing,
      res,
      upgrade,
      timeoutMs: this.upstreamTimeoutMs,
      onResponse: (h) => {
        inst.stats.recordLatency(performance.now() - sent)
        if (h.status >= 500) inst.stats.recordError()
      },
      onStreamDone: (reusable) => {
        if (reusable) inst.agent.release(stream)
        else if (!stream.duplex.destroyed) stream.duplex.destroy()
      },
      connectionOpen: () =>
        this.libp2p == null ||
        this.libp2p.getConnections(inst.peer).some((c) => c.status === 'open'),
    })
    if (outcome.kind === 'failed' && outcome.stale !== true) inst.stats.recordError()
    return outcome
  }
}

/**
 * Waits (at most RTT_SETTLE_WAIT_MS, looking every quarter probe interval) until `pick`
 * finds an instance or none is left unsettled; the last ranking.
 */
async function settle(
  pick: () => Ranking<Instance>,
  signal: AbortSignal,
): Promise<Ranking<Instance>> {
  const deadline = performance.now() + RTT_SETTLE_WAIT_MS
  let ranking = pick()
  while (ranking.ranked.length === 0 && ranking.unsettled > 0 && performance.now() < deadline) {
    if (signal.aborted) break
    await sleep(PROBE_INTERVAL_MS / 4, undefined, { signal }).catch(() => {})
    ranking = pick()
  }
  return ranking
}

/**
 * Runs `wait` with a signal aborted if the client goes away meanwhile. Made only for a
 * request that waits (for an instance being started): aborting a signal builds a
 * DOMException with its stack trace, which one controller per request paid every time
 * its response closed.
 */
async function whileConnected<T>(
  res: ClientResponse,
  wait: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const gone = new AbortController()
  const onClose = (): void => gone.abort()
  if (res.destroyed) gone.abort()
  else res.once('close', onClose)
  try {
    return await wait(gone.signal)
  } finally {
    res.off('close', onClose)
  }
}
