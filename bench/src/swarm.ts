import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { formatSwarmKey, generatePsk, type Psk } from '@mtc/p2pnode'
import { startBootstrap } from '@mtc/testkit'

/**
 * What a bench's mesh starts from: `psk` in `dir`/swarm.key and a ping-monitor bootstrap
 * on loopback. `joined` are the flags that make a daemon a peer of it, listening and
 * serving its metrics on ports the OS picks.
 */
export async function startSwarm(dir: string, psk: Psk = generatePsk()) {
  const pskFile = join(dir, 'swarm.key')
  await writeFile(pskFile, formatSwarmKey(psk), { mode: 0o600 })
  const bootstrap = await startBootstrap(pskFile, dir)
  const joined = ['--psk-file', pskFile, '--bootstrap', bootstrap.addr]
  joined.push('--listen', '/ip4/127.0.0.1/tcp/0', '--metrics', '127.0.0.1:0')
  return { pskFile, bootstrap, joined }
}
