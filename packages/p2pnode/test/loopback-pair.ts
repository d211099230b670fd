import { MeshNode } from '../src/node.ts'
import { generatePsk } from '../src/psk.ts'

/**
 * Two started mesh nodes on loopback sharing a fresh PSK, no bootstraps, `b` dialled by
 * `a`. The caller stops them (`stopPair`).
 */
export async function loopbackPair(): Promise<[MeshNode, MeshNode]> {
  const psk = generatePsk()
  const make = async (): Promise<MeshNode> => {
    const node = await MeshNode.create({
      role: 'test',
      version: '0.0.0',
      listen: ['/ip4/127.0.0.1/tcp/0'],
      bootstraps: [],
      psk,
    })
    await node.start()
    return node
  }
  const a = await make()
  const b = await make()
  await a.libp2p.dial(b.libp2p.getMultiaddrs()[0])
  return [a, b]
}

export async function stopPair(nodes: MeshNode[]): Promise<void> {
  await Promise.all(nodes.map((n) => n.stop()))
}
