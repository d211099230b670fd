import { multiaddr } from '@multiformats/multiaddr'
import { MeshNode, type MeshNodeInit } from './node.ts'
import { generatePsk, type Psk } from './psk.ts'

/**
 * Mesh nodes on loopback for tests and benches (`@mtc/p2pnode/testing`): one way to make
 * the in-process peers that specs talk to, instead of a `MeshNode.create` per spec.
 */

/** A node's init with test defaults: role `test`, version 0.0.0, a free loopback port. */
export type LoopbackNodeInit = Partial<Omit<MeshNodeInit, 'bootstraps' | 'psk'>> & {
  psk: Psk | undefined
  /** Multiaddrs of bootstraps, as strings. */
  bootstraps?: string[]
}

/** A mesh node listening on 127.0.0.1 (a free port), not started: for handlers set first. */
export async function loopbackNode(init: LoopbackNodeInit): Promise<MeshNode> {
  return await MeshNode.create({
    role: 'test',
    version: '0.0.0',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    ...init,
    bootstraps: (init.bootstraps ?? []).map((a) => multiaddr(a)),
  })
}

/** {@link loopbackNode}, started. The caller stops it. */
export async function startLoopbackNode(init: LoopbackNodeInit): Promise<MeshNode> {
  const node = await loopbackNode(init)
  await node.start()
  return node
}

/**
 * Two started loopback nodes sharing a fresh PSK, no bootstraps, `b` dialled by `a`.
 * The caller stops them.
 */
export async function loopbackPair(
  init: Omit<LoopbackNodeInit, 'psk'> = {},
): Promise<[MeshNode, MeshNode]> {
  const psk = generatePsk()
  const a = await startLoopbackNode({ ...init, psk })
  const b = await startLoopbackNode({ ...init, psk })
  await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
  return [a, b]
}

/** Stops nodes, all at once. */
export async function stopPair(nodes: MeshNode[]): Promise<void> {
  await Promise.all(nodes.map((n) => n.stop()))
}
