import type { Libp2p, Logger } from '@libp2p/interface'
import { isServiceName } from '@mtc/hash-lookup'
import { handleRpc } from '@mtc/p2pnode'
import { AllocationError } from '../errors.ts'
import {
  ALLOCATE_PROTOCOL,
  ALLOCATOR_INSTANCES_PROTOCOL,
  ALLOCATOR_STATUS_PROTOCOL,
  type AllocateRequest,
  type AllocatorStatusReply,
  type InstancesReply,
  type InstancesRequest,
} from '../protocol.ts'
import type { InstanceManager } from './instances.ts'
import type { AllocatorMetrics } from './metrics.ts'

/** Serves allocation and status requests over the overlay. */
export class AllocatorServer {
  private readonly libp2p: Libp2p
  private readonly manager: InstanceManager
  private readonly metrics: AllocatorMetrics
  private readonly maxInstances: number
  private readonly log: Logger
  /** The instances and rollout of a service (ALLOCATOR_INSTANCES_PROTOCOL). */
  private readonly report?: (service: string) => InstancesReply
  private readonly controller = new AbortController()

  constructor(init: {
    libp2p: Libp2p
    manager: InstanceManager
    metrics: AllocatorMetrics
    maxInstances: number
    log: Logger
    report?: (service: string) => InstancesReply
  }) {
    this.report = init.report
    this.libp2p = init.libp2p
    this.manager = init.manager
    this.metrics = init.metrics
    this.maxInstances = init.maxInstances
    this.log = init.log
  }

  async start(): Promise<void> {
    await handleRpc(this.libp2p, ALLOCATE_PROTOCOL, async (rpc, conn) => {
      const req = await rpc.readJson<AllocateRequest>()
      const service = req?.service
      if (!isServiceName(service)) {
        throw new AllocationError(
          'ERR_INVALID_NAME',
          `invalid service name ${JSON.stringify(service)}`,
        )
      }
      this.log(
        '%s of %s asked by %p',
        req?.scaleOut === true ? 'scale-out' : 'allocation',
        service,
        conn.remotePeer,
      )
      try {
        const scaleOut = req?.scaleOut === true
        const instance = await this.manager.allocate(service, this.controller.signal, scaleOut)
        this.metrics.allocations.inc({ outcome: instance.started ? 'started' : 'reused' })
        await rpc.writeJson({ ok: true, instance })
      } catch (err) {
        const e = err as Error & { code?: string }
        this.metrics.allocations.inc({ outcome: e.code ?? 'ERR_START_FAILED' })
        this.log.error('allocation of %s failed: %s', service, e.message)
        throw e.code != null ? e : new AllocationError('ERR_START_FAILED', e.message, { cause: e })
      }
    })
    await handleRpc(this.libp2p, ALLOCATOR_INSTANCES_PROTOCOL, async (rpc) => {
      const req = await rpc.readJson<InstancesRequest>()
      if (!isServiceName(req?.service)) {
        throw new AllocationError(
          'ERR_INVALID_NAME',
          `invalid service name ${JSON.stringify(req?.service)}`,
        )
      }
      await rpc.writeJson({ ok: true, ...(this.report?.(req.service) ?? { instances: [] }) })
    })
    await handleRpc(this.libp2p, ALLOCATOR_STATUS_PROTOCOL, async (rpc) => {
      await rpc.readJson()
      const status: AllocatorStatusReply = {
        running: this.manager.runningCount,
        starting: this.manager.startingCount,
        maxInstances: this.maxInstances,
        services: this.manager.serviceCounts(),
      }
      await rpc.writeJson({ ok: true, ...status })
    })
  }

  async stop(): Promise<void> {
    this.controller.abort()
    await this.libp2p.unhandle(ALLOCATE_PROTOCOL)
    await this.libp2p.unhandle(ALLOCATOR_STATUS_PROTOCOL)
    await this.libp2p.unhandle(ALLOCATOR_INSTANCES_PROTOCOL)
  }
}
