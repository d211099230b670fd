import type { PeerId } from '@libp2p/interface'

export interface AllocationRequest {
  service: string
  /** Why: no usable instance at all, or the best one is above the soft RTT limit. */
  reason: 'no-instance' | 'above-soft-limit'
  signal: AbortSignal
}

/**
 * Starts instances on demand (the allocator client plugs in here). `allocate` resolves
 * with the new instance's peer ID once it is reachable, or undefined when none could be
 * started; the proxy then probes it like any discovered instance. Implementations share
 * one start among concurrent calls for the same service.
 */
export interface Allocator {
  allocate(request: AllocationRequest): Promise<PeerId | undefined>
}

/** No allocation: requests for a service without a usable instance fail with 503. */
export const noAllocator: Allocator = {
  async allocate() {
    return undefined
  },
}
