import { type IncomingMessage, request, type ServerResponse } from 'node:http'
import { pipeline } from 'node:stream'
import type { Logger } from '@libp2p/interface'
import { type Allocator, noAllocator } from './allocator.ts'
import { DEFAULT_UPSTREAM_TIMEOUT_MS, MAX_ATTEMPTS } from './constants.ts'
import { ERROR_HEADER, ProxyError, sendError } from './errors.ts'
import { endToEndHeaders, gatewayRequestHeaders } from './http-headers.ts'
import type { Instance, InstanceRegistry } from './instance-registry.ts'
import type { ProxyMetrics } from './metrics.ts'
import { RequestBody } from './request-body.ts'
import {
  mergeRequirements,
  noRequirementsSource,
  type Requirements,
  type RequirementsSource,
} from './requirements.ts'
import { rank } from './selector.ts'

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
  private readonly allocator: Allocator
  private readonly upstreamTimeoutMs: number
  private readonly allocating = new Set<string>()
  private readonly controller = new AbortController()

  constructor(init: ForwarderInit) {
    this.registry = init.registry
    this.metrics = init.metrics
    this.log = init.log
    this.requirements = init.requirements ?? {}
    this.requirementsSource = init.requirementsSource ?? noRequirementsSource
    this.allocator = init.allocator ?? noAllocator
    this.upstreamTimeoutMs = init.upstreamTimeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS
  }

  stop(): void {
    this.controller.abort()
  }

  async forward(
    service: string,
    path: string,
    req: IncomingMessage,
    res: ServerResponse,
  ): Promise<void> {
    const method = req.method ?? 'GET'
    const headers = gatewayRequestHeaders(req, service)
    const body = new RequestBody(req)
    const tried = new Set<string>()
    let inst = await this.choose(service, tried)
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.attempt(inst, method, path, headers, body, res)
      if (outcome.kind === 'relayed') return
      tried.add(inst.id)
      if (!outcome.delivered) this.registry.suspect(service, inst)
      const retry =
        attempt < MAX_ATTEMPTS &&
        body.replayable &&
        !res.destroyed &&
        (!outcome.delivered || IDEMPOTENT.has(method))
      const next = retry ? await this.choose(service, tried).catch(() => undefined) : undefined
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

  /** The best usable instance not in `exclude`, or the 404/503 error saying why not. */
  private async choose(service: string, exclude: ReadonlySet<string>): Promise<Instance> {
    const entry = await this.registry.resolve(service)
    const requirements = mergeRequirements(
      this.requirements,
      await this.requirementsSource.get(service),
    )
    let { ranked, tooFar, aboveSoft } = rank(entry.instances.values(), requirements, exclude)
    if (ranked.length === 0 && exclude.size === 0) {
      const adopted = await this.allocate(service, 'no-instance')
      if (adopted != null) ranked = [adopted]
    } else if (aboveSoft) {
      void this.allocate(service, 'above-soft-limit')
    }
    const best = ranked[0]
    if (best == null) {
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

  /** Asks the allocator for an instance (one request per service at a time). */
  private async allocate(
    service: string,
    reason: 'no-instance' | 'above-soft-limit',
  ): Promise<Instance | undefined> {
    if (this.allocating.has(service)) return undefined
    this.allocating.add(service)
    try {
      const peer = await this.allocator.allocate({
        service,
        reason,
        signal: this.controller.signal,
      })
      return peer != null ? await this.registry.adopt(service, peer) : undefined
    } catch (err) {
      this.log.error('allocation of %s failed: %s', service, (err as Error).message)
      return undefined
    } finally {
      this.allocating.delete(service)
    }
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
    const upstream = request({
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
      inst.stats.recordLatency(performance.now() - started)
      if ((ures.statusCode ?? 0) >= 500) inst.stats.recordError()
      res.off('close', onClientGone)
      this.relay(ures, res, () => resolve({ kind: 'relayed' }))
    })
    upstream.on('error', (err) => {
      if (responded) return // the response pipeline reports it
      body.detach()
      inst.stats.recordError()
      if (err instanceof ProxyError) {
        fail({ kind: 'failed', delivered: true, error: err })
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
    pipeline(ures, res, (err) => {
      if (err != null) this.log.trace('response cut: %s', err.message)
      done?.()
    })
  }
}
