import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from '@libp2p/interface'
import { http } from '@mtc/p2pnode'
import { type Allocator, noAllocator } from './allocator.ts'
import { DEFAULT_UPSTREAM_TIMEOUT_MS, MAX_ATTEMPTS } from './constants.ts'
import { ERROR_HEADER, ProxyError, sendError } from './errors.ts'
import { endToEndHeaders, gatewayRequestHeaders } from './http-headers.ts'
import type { Instance, InstanceRegistry } from './instance-registry.ts'
import type { ProxyMetrics } from './metrics.ts'
import { OnDemand } from './on-demand.ts'
import { flushHeadSoon, pipe } from './pipe.ts'
import { RequestBody } from './request-body.ts'
import type { Framing } from './request-framing.ts'
import {
  mergeRequirements,
  noRequirementsSource,
  type Requirements,
  type RequirementsSource,
} from './requirements.ts'
import { preferImage, type Ranking, rank } from './selector.ts'

/** Methods whose repetition has the effect of one request (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE'])

export interface ForwarderInit {
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

type Outcome =
  | { kind: 'relayed' }
  | {
      kind: 'failed'
      /** Some of the request may have reached the service. */
      delivered: boolean
      error: ProxyError
      /** An instance's own error answer, relayed if there is no retry. */
      response?: IncomingMessage
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

  constructor(init: ForwarderInit) {
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
  }

  /** Requests waiting for an instance being started fail (ERR_SHUTTING_DOWN); requests
   * already forwarded go on. */
  stop(): void {
    this.onDemand.stop()
  }

  async forward(
    service: string,
    path: string,
    req: IncomingMessage,
    res: ServerResponse,
    framing: Framing,
  ): Promise<void> {
    const method = req.method ?? 'GET'
    const headers = gatewayRequestHeaders(req, service, framing)
    const body = new RequestBody(req, framing)
    const tried = new Set<string>()
    // A client that goes away stops waiting for an instance being started.
    const gone = new AbortController()
    res.once('close', () => gone.abort())
    let inst: Instance = await this.choose(service, tried, gone.signal)
    for (let attempt = 1; ; attempt++) {
      // A client gone meanwhile is not forwarded (its 'close' already fired).
      if (res.destroyed) return
      const outcome = await this.attempt(inst, method, path, headers, body, res)
      if (outcome.kind === 'relayed') return
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
        ? await this.choose(service, tried, gone.signal, lost).catch(() => undefined)
        : undefined
      if (next == null) {
        this.log('%s %s/%s failed on %s: %s', method, service, path, inst.id, outcome.error.message)
        if (outcome.response != null) this.relay(outcome.response, res)
        else sendError(res, outcome.error)
        return
      }
      outcome.response?.resume()
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
    signal: AbortSignal,
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
    if (ranking.ranked.length === 0 && (exclude.size === 0 || afterLoss)) {
      const inst = await this.onDemand.waitFor(entry, () => pick().ranked[0], signal)
      ranking = inst != null ? { ranked: [inst], tooFar: 0, aboveSoft: false } : pick()
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
    if (exclude.size === 0 && entry.preferred !== best.id) {
      if (entry.preferred != null) this.metrics.instanceChanges.inc({ service })
      this.log('service %s: now preferring instance %s', service, best.id)
      entry.preferred = best.id
    }
    return best
  }

  private attempt(
    inst: Instance,
    method: string,
    path: string,
    headers: string[],
    body: RequestBody,
    res: ServerResponse,
  ): Promise<Outcome> {
    const { promise, resolve } = Promise.withResolvers<Outcome>()
    const started = performance.now()
    let assigned = false
    let responded = false
    const upstream = http.request({
      agent: inst.agent,
      host: inst.id,
      method,
      path,
      headers,
    })
    const timer = setTimeout(() => {
      upstream.destroy(
        new ProxyError('ERR_UPSTREAM_TIMEOUT', `no answer within ${this.upstreamTimeoutMs} ms`),
      )
    }, this.upstreamTimeoutMs)
    const onClientGone = (): void => {
      if (!res.writableFinished) upstream.destroy()
    }
    res.once('close', onClientGone)
    const fail = (outcome: Outcome): void => {
      clearTimeout(timer)
      res.off('close', onClientGone)
      resolve(outcome)
    }
    // The body flows only once a stream is assigned: a request that never got one
    // consumed nothing and can go to another instance whatever its method.
    upstream.once('socket', () => {
      assigned = true
      body.sendTo(upstream)
    })
    upstream.on('response', (ures) => {
      responded = true
      clearTimeout(timer)
      const code = ures.headers[ERROR_HEADER]
      if (code === 'ERR_SERVICE_UNREACHABLE' || code === 'ERR_SERVICE_RESET') {
        // The instance is up but its service is not: a failed attempt, not an answer.
        inst.stats.recordError()
        body.detach()
        if (!upstream.writableFinished) upstream.destroy()
        fail({
          kind: 'failed',
          delivered: code === 'ERR_SERVICE_RESET',
          error: new ProxyError(code),
          response: ures,
        })
        return
      }
      // Only a reused stream measures the instance; a fresh one adds its own set-up.
      if (upstream.reusedSocket) inst.stats.recordLatency(performance.now() - started)
      if ((ures.statusCode ?? 0) >= 500) inst.stats.recordError()
      res.off('close', onClientGone)
      this.relay(ures, res, () => resolve({ kind: 'relayed' }))
    })
    upstream.on('error', (err) => {
      if (responded) return // the response pipeline reports it
      body.detach()
      inst.stats.recordError()
      if (err instanceof ProxyError) {
        // A timeout or busy instance before any stream was assigned delivered nothing.
        fail({ kind: 'failed', delivered: assigned, error: err })
        return
      }
      fail({
        kind: 'failed',
        delivered: assigned,
        error: new ProxyError('ERR_INSTANCE_UNREACHABLE', `${inst.id}: ${err.message}`),
      })
    })
    return promise
  }

  /** Streams an upstream response to the client, minus hop-by-hop headers. */
  private relay(ures: IncomingMessage, res: ServerResponse, done?: () => void): void {
    res.writeHead(ures.statusCode ?? 502, ures.statusMessage, endToEndHeaders(ures.rawHeaders))
    pipe(ures, res, (err) => {
      if (err != null) this.log.trace('response cut: %s', err.message)
      done?.()
    })
    flushHeadSoon(ures, res)
  }
}
