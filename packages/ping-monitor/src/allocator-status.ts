import type { Libp2p, PeerId } from '@libp2p/interface'
import { expectReply, openRpc, ProtocolViolationError } from '@mtc/p2pnode'

/**
 * The allocator's status protocol (packages/allocator/src/protocol.ts). Spoken here
 * rather than imported: the bootstrap should not depend on the allocator's Docker client.
 */
export const ALLOCATOR_STATUS_PROTOCOL = '/mtc/alloc-status/1.0.0'
/** A status answer is a few numbers. */
const MAX_ANSWER_BYTES = 1024
const TIMEOUT_MS = 5_000

export interface AllocatorLoad {
  running: number
  maxInstances: number
  /** Starts in flight. */
  starting: number
}

const count = (v: unknown): v is number =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= 0

/** How many instances an allocator runs, starts and may run. */
export async function queryAllocatorLoad(
  libp2p: Libp2p,
  peer: PeerId,
  options: { signal?: AbortSignal } = {},
): Promise<AllocatorLoad> {
  const signal = AbortSignal.any([
    AbortSignal.timeout(TIMEOUT_MS),
    ...(options.signal != null ? [options.signal] : []),
  ])
  const rpc = await openRpc(libp2p, peer, ALLOCATOR_STATUS_PROTOCOL, {
    signal,
    maxMessageBytes: MAX_ANSWER_BYTES,
    idleTimeoutMs: TIMEOUT_MS,
  })
  try {
    await rpc.writeJson({}, signal)
    const r = await expectReply<Record<string, unknown>>(rpc, signal)
    if (!count(r.running) || !count(r.maxInstances) || !count(r.starting)) {
      throw new ProtocolViolationError('allocator status: not three counts')
    }
    return { running: r.running, maxInstances: r.maxInstances, starting: r.starting }
  } catch (err) {
    rpc.abort(err as Error)
    throw err
  } finally {
    await rpc.close()
  }
}
