// Re-executes with the daemon's Node flags before the libp2p stack is loaded (the
// container image runs a bundle of this file, so the shim in bin/ cannot do it).
import { execWithDaemonFlags } from '@mtc/p2pnode/node-flags'

execWithDaemonFlags()
const { exitWith } = await import('@mtc/p2pnode')
const { main } = await import('./main.ts')
exitWith(await main(process.argv.slice(2)))
