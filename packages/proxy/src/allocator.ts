import type { PeerId } from '@libp2p/interface'
import type { ScaleOutResult } from './autoscaler.ts'

/**
 * Why an instance is asked for: none is usable, the best is above the soft limit, or the
 * last allocation handed out an instance that does not answer.
 */
export type AllocationReason = 'no-instance' | 'above-soft-limit' | 'instance-unreachable'

export interface AllocationRequest {
  service: string
  reason: AllocationReason
  signal: AbortSignal
}

/**
 * Starts instances on demand. `allocate` resolves with the new instance's peer ID once it
 * is reachable (its addresses already in the peer store), or with undefined when there is
 * no allocator to ask; the proxy then probes the instance like any discovered one.
 * Failures reject with a ProxyError: ERR_UNKNOWN_SERVICE, ERR_NO_CAPACITY or
 * ERR_ALLOCATION_FAILED. The proxy asks once per service at a time (see OnDemand).
 */
export interface Allocator {
  allocate(request: AllocationRequest): Promise<PeerId | undefined>
  /**
   * Scale-out: one more instance of `service`, unless the allocators are starting one
   * already or run `maxInstances` of it (see Autoscaler). Absent: no scaling.
   */
  scaleOut?(service: string, maxInstances: number, signal: AbortSignal): Promise<ScaleOutResult>
  /** Background work (e.g. looking up allocators) begins; called with the proxy's start. */
  start?(): void
  stop?(): Promise<void> | void
}

/** No allocation (`--no-allocate`): requests for a service without a usable instance fail. */
export const noAllocator: Allocator = {
  async allocate() {
    return undefined
  },
}
