// Re-executes with the daemon's memory settings before the libp2p stack is loaded. The
// container image runs the bundle of this file directly, so it happens here; under
// bin/proxy.js, which re-executes first, it finds the settings in effect and does nothing.
import { execWithDaemonFlags } from '@mtc/p2pnode/node-flags'

execWithDaemonFlags()
const { exitWith } = await import('@mtc/p2pnode')
const { main } = await import('./main.ts')
exitWith(await main(process.argv.slice(2)))
