import type { Libp2p, PeerId } from '@libp2p/interface'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 } from 'multiformats/hashes/sha2'
import { iterateUntil } from './abort.ts'
import { DHT_PROTOCOL, PROTOCOL_PREFIX } from './constants.ts'

/** What a provider record announces: instances of a service, allocators, hl-services, blobs. */
export type DiscoveryKind = 'service' | 'allocator' | 'hash-lookup' | 'blob'

/** The DHT key of `/mtc/<kind>/<name>`: a raw CID of its SHA-256, the same on every node. */
export async function discoveryKey(kind: DiscoveryKind, name = ''): Promise<CID> {
  const bytes = new TextEncoder().encode(`/${PROTOCOL_PREFIX}/${kind}/${name}`)
  return CID.createV1(raw.code, await sha256.digest(bytes))
}

/** Nothing to announce to: no connected peer serves the mesh's DHT. */
export class NoDhtPeersError extends Error {
  static readonly code = 'ERR_NO_DHT_PEERS'
  override readonly name = 'NoDhtPeersError'
  readonly code = NoDhtPeersError.code
}

/**
 * Whether the DHT has a peer to send a query to. kad-dht holds every query until its
 * routing table has one; its size is not part of the typed API, so the connected peers'
 * identified protocols stand in where it is missing.
 */
export async function hasDhtPeers(libp2p: Libp2p): Promise<boolean> {
  const dht = (libp2p.services as { dht?: { routingTable?: { size?: number } } }).dht
  const size = dht?.routingTable?.size
  if (typeof size === 'number') return size > 0
  for (const peer of libp2p.getPeers()) {
    const info = await libp2p.peerStore.get(peer).catch(() => undefined)
    if (info?.protocols.includes(DHT_PROTOCOL) === true) return true
  }
  return false
}

/**
 * Announces this node as a provider of `kind`/`name`. Fails at once with NoDhtPeersError
 * when no DHT server is connected, instead of waiting for one (the Announcer retries).
 */
export async function provide(
  libp2p: Libp2p,
  kind: DiscoveryKind,
  name = '',
  options: { signal?: AbortSignal } = {},
): Promise<void> {
  if (!(await hasDhtPeers(libp2p))) throw new NoDhtPeersError('no DHT server connected yet')
  await libp2p.contentRouting.provide(await discoveryKey(kind, name), options)
}

export interface ProviderLookupOptions {
  /** Ends the lookup; the iteration then throws the signal's reason. */
  signal?: AbortSignal
  /** Stop after this many distinct providers. */
  limit?: number
}

/**
 * Providers of `kind`/`name` as the DHT streams them in: each distinct one once, this node
 * excluded, the addresses the DHT gave with it merged into the peer store first (so a dial
 * can use them). Ends with the lookup, at `limit`, or with an error once `signal` aborts
 * (raced: kad-dht does not always honour it). Provider records can be stale: dial a peer
 * before relying on it.
 */
export async function* streamProviders(
  libp2p: Libp2p,
  kind: DiscoveryKind,
  name = '',
  options: ProviderLookupOptions = {},
): AsyncGenerator<PeerId> {
  const { signal } = options
  const limit = options.limit ?? Number.POSITIVE_INFINITY
  if (limit <= 0) return
  const key = await discoveryKey(kind, name)
  // Aborted while the key was hashed: no DHT query for nobody.
  signal?.throwIfAborted()
  const found = libp2p.contentRouting.findProviders(key, { signal })
  const seen = new Set<string>()
  for await (const provider of signal != null ? iterateUntil(found, signal) : found) {
    const id = provider.id.toString()
    if (provider.id.equals(libp2p.peerId) || seen.has(id)) continue
    seen.add(id)
    if (provider.multiaddrs.length > 0) {
      await libp2p.peerStore.merge(provider.id, { multiaddrs: provider.multiaddrs })
    }
    yield provider.id
    if (seen.size >= limit) return
  }
}

/** The providers streamProviders() yields, once the lookup ends; rejects when it fails. */
export async function findProviders(
  libp2p: Libp2p,
  kind: DiscoveryKind,
  name = '',
  options: ProviderLookupOptions = {},
): Promise<PeerId[]> {
  const found: PeerId[] = []
  for await (const peer of streamProviders(libp2p, kind, name, options)) found.push(peer)
  return found
}
