import type { ComponentLogger, Libp2p } from '@libp2p/interface'
import type { InstanceStatus } from '@mtc/p2pnode'
import type { Registry } from 'prom-client'
import type { Allocator } from './allocator.ts'
import { Forwarder } from './forwarder.ts'
import { Gateway } from './gateway.ts'
import type { HealthSettings } from './health-check.ts'
import { InstanceRegistry } from './instance-registry.ts'
import { ProxyMetrics } from './metrics.ts'
import type { Requirements, RequirementsSource } from './requirements.ts'
import { ServiceEndpoint } from './service-endpoint.ts'

export interface MeshProxyInit {
  libp2p: Libp2p
  /** Where the proxy's metrics go (the daemon's registry, shared with libp2p's). */
  registry: Registry
  /** The proxy's metrics, when they are shared with the requirements source; else new. */
  metrics?: ProxyMetrics
  logger: ComponentLogger
  /** Gateway port on 127.0.0.1. */
  port: number
  /** Service mode: the service this instance runs and where it listens. */
  service?: {
    name: string
    target: { host: string; port: number }
    /** Readiness by HTTP health check, the image run, the allocator that may drain it. */
    health?: HealthSettings
    imageId?: string
    drainFrom?: string
  }
  requirements?: Requirements
  /** Per-service requirements (the registry's); started and stopped with the proxy. */
  requirementsSource?: RequirementsSource
  /** Starts instances on demand; started and stopped with the proxy. None: no allocation. */
  allocator?: Allocator
  /** How long a request waits for an instance being started. */
  allocationTimeoutMs?: number
  headersTimeoutMs?: number
  upstreamTimeoutMs?: number
}

/**
 * The proxy: the gateway (both modes) with discovery, selection and failover behind it,
 * and in service mode the instance endpoint. Started after the mesh node, stopped
 * before it.
 */
export class MeshProxy {
  readonly metrics: ProxyMetrics
  readonly instances: InstanceRegistry
  readonly gateway: Gateway
  readonly endpoint?: ServiceEndpoint
  private readonly forwarder: Forwarder
  private readonly allocator?: Allocator
  private readonly requirementsSource?: RequirementsSource
  private started = false

  constructor(init: MeshProxyInit) {
    const { logger } = init
    this.allocator = init.allocator
    this.requirementsSource = init.requirementsSource
    this.metrics = init.metrics ?? new ProxyMetrics(init.registry)
    this.instances = new InstanceRegistry({
      libp2p: init.libp2p,
      log: logger.forComponent('mtc:proxy:instances'),
      metrics: this.metrics,
    })
    this.forwarder = new Forwarder({
      libp2p: init.libp2p,
      registry: this.instances,
      metrics: this.metrics,
      log: logger.forComponent('mtc:proxy:forwarder'),
      requirements: init.requirements,
      requirementsSource: init.requirementsSource,
      allocator: init.allocator,
      allocationTimeoutMs: init.allocationTimeoutMs,
      upstreamTimeoutMs: init.upstreamTimeoutMs,
    })
    this.gateway = new Gateway({
      port: init.port,
      forwarder: this.forwarder,
      metrics: this.metrics,
      log: logger.forComponent('mtc:proxy:gateway'),
      headersTimeoutMs: init.headersTimeoutMs,
    })
    if (init.service != null) {
      const endpoint = new ServiceEndpoint({
        libp2p: init.libp2p,
        service: init.service.name,
        target: init.service.target,
        health: init.service.health,
        imageId: init.service.imageId,
        drainFrom: init.service.drainFrom,
        metrics: this.metrics,
        log: logger.forComponent('mtc:proxy:endpoint'),
      })
      this.endpoint = endpoint
      this.metrics.setStatusSource(() => endpoint.status())
      this.metrics.setEndpointSource(() => endpoint.relayCounts())
    }
  }

  async start(): Promise<void> {
    if (this.started) return
    this.started = true
    this.instances.start()
    this.forwarder.start()
    this.allocator?.start?.()
    this.requirementsSource?.start?.()
    try {
      await this.gateway.start()
      await this.endpoint?.start()
    } catch (err) {
      await this.stop()
      throw err
    }
  }

  async stop(): Promise<void> {
    if (!this.started) return
    this.started = false
    // Requests waiting for an instance being started fail now; forwarded ones finish.
    this.forwarder.stop()
    await this.gateway.stop()
    await Promise.allSettled([this.allocator?.stop?.(), this.requirementsSource?.stop?.()])
    await this.instances.stop()
    await this.endpoint?.stop()
  }

  /** Time since the last request or relayed byte on either side (ms); 0 while one is open. */
  quietMs(): number {
    return Math.min(this.gateway.quietMs(), this.endpoint?.quietMs() ?? Number.POSITIVE_INFINITY)
  }

  /** Service mode: what `/status` and the status protocol report. */
  status(): InstanceStatus | undefined {
    return this.endpoint?.status()
  }
}
