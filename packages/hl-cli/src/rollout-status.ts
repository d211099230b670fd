import { setTimeout as sleep } from 'node:timers/promises'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { allocatorInstances, type InstanceReport } from '@mtc/allocator/client'
import type { HashLookupClient } from '@mtc/hash-lookup'
import { findProviders } from '@mtc/p2pnode'

/** `hl-cli rollout status` polls the allocators this often. */
const POLL_MS = 500
/** One allocator's answer, at most. */
const ALLOCATOR_TIMEOUT_MS = 5_000

export class RolloutFailedError extends Error {
  readonly code = 'ERR_ROLLOUT_FAILED'
}

export interface RolloutStatus {
  service: string
  version: number
  imageId: string
  state: 'rolling' | 'done' | 'failed'
  message?: string
  /** Instances mesh-wide (of the allocators that answered), by image ID. */
  images: Record<string, { instances: number; ready: number; draining: number }>
  allocators: number
}

/**
 * The rollout of `service`'s current version, from every allocator found in the DHT:
 * done once every instance runs the record's image and none drains; failed when an
 * allocator's rollout of that image failed (its instances never got ready); rolling
 * otherwise. Polls until done or failed (or `signal`), printing each new state line.
 */
export async function waitForRollout(
  libp2p: Libp2p,
  client: HashLookupClient,
  service: string,
  signal: AbortSignal,
  print: (line: string) => void,
): Promise<RolloutStatus> {
  let last = ''
  for (;;) {
    const status = await rolloutStatus(libp2p, client, service, signal)
    const line = describe(status)
    if (line !== last) print(line)
    last = line
    if (status.state !== 'rolling') return status
    await sleep(POLL_MS, undefined, { signal })
  }
}

export async function rolloutStatus(
  libp2p: Libp2p,
  client: HashLookupClient,
  service: string,
  signal: AbortSignal,
): Promise<RolloutStatus> {
  const record = await client.get(service, signal)
  const peers = await findProviders(libp2p, 'allocator', '', { signal }).catch(() => [] as PeerId[])
  const answers = await Promise.all(
    peers.map((peer) =>
      allocatorInstances(libp2p, peer, service, {
        signal: AbortSignal.any([signal, AbortSignal.timeout(ALLOCATOR_TIMEOUT_MS)]),
      }).catch(() => undefined),
    ),
  )
  const status: RolloutStatus = {
    service,
    version: record.version,
    imageId: record.imageId,
    state: 'done',
    images: {},
    allocators: 0,
  }
  const instances: InstanceReport[] = []
  for (const a of answers) {
    if (a == null) continue
    status.allocators++
    instances.push(...a.instances)
    const r = a.rollout
    if (r == null || r.imageId !== record.imageId) continue
    if (r.state === 'failed') {
      status.state = 'failed'
      status.message = r.message
    } else if (r.state === 'rolling' && status.state !== 'failed') status.state = 'rolling'
  }
  for (const i of instances) {
    const row = status.images[i.imageId] ?? { instances: 0, ready: 0, draining: 0 }
    status.images[i.imageId] = row
    row.instances++
    if (i.ready) row.ready++
    if (i.draining) row.draining++
    const stale = i.imageId !== record.imageId || i.draining
    if (stale && status.state === 'done') status.state = 'rolling'
  }
  return status
}

function describe(s: RolloutStatus): string {
  const short = (id: string) => id.replace(/^sha256:/, '').slice(0, 12)
  const images = Object.entries(s.images)
    .map(
      ([id, n]) =>
        `${short(id)}${id === s.imageId ? ' (new)' : ''}: ${n.instances} instance(s), ${n.ready} ready${n.draining > 0 ? `, ${n.draining} draining` : ''}`,
    )
    .join('; ')
  const head = `${s.service} version ${s.version} (${short(s.imageId)}): ${s.state}`
  const why = s.state === 'failed' && s.message != null ? ` - ${s.message}` : ''
  return `${head}${why}${images !== '' ? ` - ${images}` : ' - no instances'}`
}
