// A mesh node in its own process, for tests that freeze it (SIGSTOP) as a dead host.
// PSK in MTC_TEST_SWARM_KEY; prints its multiaddr on stdout; holds every stream of
// HANG_PROTOCOL open without answering until SIGTERM.
import { MeshNode } from '../src/node.ts'
import { parseSwarmKey } from '../src/psk.ts'

export const HANG_PROTOCOL = '/mtc/test-hang/1.0.0'

if (import.meta.main) {
  const node = await MeshNode.create({
    role: 'test',
    version: '0.0.0',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstraps: [],
    psk: parseSwarmKey(process.env.MTC_TEST_SWARM_KEY ?? ''),
  })
  await node.libp2p.handle(HANG_PROTOCOL, () => {})
  await node.start()
  process.stdout.write(`${node.multiaddrs()[0]}\n`)
  process.once('SIGTERM', () => {
    void node.stop().finally(() => process.exit(0))
  })
}
