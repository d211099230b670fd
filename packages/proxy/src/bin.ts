// Re-executes with the daemon's memory settings before the libp2p stack is loaded. What
// runs is a bundle of this file (dist/proxy.mjs, for bin/proxy.js and the container image),
// so it has to happen here, not in a shim.
import { execWithDaemonFlags } from '@mtc/p2pnode/node-flags'

execWithDaemonFlags()
const { exitWith } = await import('@mtc/p2pnode')
const { main } = await import('./main.ts')
exitWith(await main(process.argv.slice(2)))
