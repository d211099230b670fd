import type { Libp2p, PeerId } from '@libp2p/interface'
import { expectReply, openRpc } from '@mtc/p2pnode'
import { ALLOCATION_TIMEOUT_MS } from './constants.ts'
import {
  ALLOCATE_PROTOCOL,
  ALLOCATOR_INSTANCES_PROTOCOL,
  ALLOCATOR_STATUS_PROTOCOL,
  type AllocatedInstance,
  type AllocateReply,
  type AllocateRequest,
  type AllocatorStatusReply,
  type InstancesReply,
} from './protocol.ts'

/**
 * Asks the allocator `peer` for an instance of `service`; resolves once the instance
 * answers through the overlay. Errors are RemoteErrors carrying ALLOCATION_ERRORS codes.
 */
export async function requestAllocation(
  libp2p: Libp2p,
  peer: PeerId,
  service: string,
  options: { signal?: AbortSignal; timeoutMs?: number; scaleOut?: boolean } = {},
): Promise<AllocatedInstance> {
  const timeoutMs = options.timeoutMs ?? ALLOCATION_TIMEOUT_MS
  const rpc = await openRpc(libp2p, peer, ALLOCATE_PROTOCOL, {
    signal: options.signal,
    idleTimeoutMs: timeoutMs,
  })
  try {
    const req: AllocateRequest = { service }
    if (options.scaleOut === true) req.scaleOut = true
    await rpc.writeJson(req, options.signal)
    return (await expectReply<AllocateReply>(rpc, options.signal)).instance
  } finally {
    await rpc.close()
  }
}

/** How many instances `peer` runs and may run. */
export async function allocatorStatus(
  libp2p: Libp2p,
  peer: PeerId,
  options: { signal?: AbortSignal } = {},
): Promise<AllocatorStatusReply> {
  const rpc = await openRpc(libp2p, peer, ALLOCATOR_STATUS_PROTOCOL, { signal: options.signal })
  try {
    await rpc.writeJson({}, options.signal)
    return await expectReply<AllocatorStatusReply>(rpc, options.signal)
  } finally {
    await rpc.close()
  }
}

/** The instances of `service` that `peer` runs, and its rollout of it (`hl-cli rollout status`). */
export async function allocatorInstances(
  libp2p: Libp2p,
  peer: PeerId,
  service: string,
  options: { signal?: AbortSignal } = {},
): Promise<InstancesReply> {
  const rpc = await openRpc(libp2p, peer, ALLOCATOR_INSTANCES_PROTOCOL, { signal: options.signal })
  try {
    await rpc.writeJson({ service }, options.signal)
    const reply = await expectReply<InstancesReply>(rpc, options.signal)
    return { instances: reply.instances ?? [], rollout: reply.rollout }
  } finally {
    await rpc.close()
  }
}
