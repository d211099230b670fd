import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { binPath, freePort, type Proc, run, waitFor } from '@mtc/testkit'
import { DelayRelay } from './delay-relay.ts'
import { HELLO_BIN, type Mesh } from './fixture.ts'

/** A service instance that the rest of the mesh reaches only through its relay. */
export interface InstanceBehindRelay {
  relay: DelayRelay
  /** The hello-world-server (leader of the namespace) and the service-mode proxy. */
  hello: Proc
  proxy: Proc
}

/**
 * Starts an instance of `service` (a hello-world-server tagged `tag` behind a service-mode
 * proxy with the identity in `keyFile`) on a "far host" that no connection can reach or
 * leave except through a DelayRelay adding `delayMs`:
 * - both processes run in a network namespace of their own holding only `lo`
 *   (`unshare --net`, the proxy joining with `nsenter`), so they can dial nobody outside;
 * - the proxy's mesh node listens on a Unix socket, which, being a path, the relay in the
 *   test's namespace can connect to;
 * - it announces the relay's address alone (`--announce`), so no peer learns another way in.
 * Without root, a user namespace (`--user --map-root-user`) gives the same. Processes stop
 * with the mesh (testkit's stopAll); the caller kills the relay.
 */
export async function startBehindRelay(
  mesh: Mesh,
  init: { service: string; tag: string; keyFile: string; delayMs: number },
): Promise<InstanceBehindRelay> {
  const socket = join(mesh.dir.path, `${init.tag}.sock`)
  const relay = new DelayRelay(socket, init.delayMs)
  await relay.start()
  try {
    return { relay, ...(await startIsolated(mesh, init, socket, relay)) }
  } catch (err) {
    relay.kill()
    throw err
  }
}

async function startIsolated(
  mesh: Mesh,
  init: { service: string; tag: string; keyFile: string },
  socket: string,
  relay: DelayRelay,
): Promise<{ hello: Proc; proxy: Proc }> {
  const root = process.getuid?.() === 0
  const port = await freePort()
  const hello = run(
    'unshare',
    [
      ...(root ? ['--net'] : ['--user', '--map-root-user', '--net']),
      '--',
      'sh',
      '-c',
      'ip link set lo up && exec "$@"',
      'sh',
      HELLO_BIN,
      String(port),
    ],
    { env: { SERVICE_HOST: '127.0.0.1', INSTANCE_ID: init.tag } },
  )
  await waitFor(`hello ${init.tag} listening in its namespace`, () => {
    if (hello.child.exitCode != null) throw new Error(`exited: ${hello.stderr()}`)
    return hello.stdout().includes('listening')
  })
  const addrFile = join(mesh.dir.path, `${init.tag}.addr`)
  const proxy = run('nsenter', [
    `--target=${hello.child.pid}`,
    ...(root ? ['--net'] : ['--user', '--net', '--preserve-credentials']),
    '--',
    binPath('proxy'),
    '--psk-file',
    mesh.pskFile,
    '--listen',
    `/unix/${encodeURIComponent(socket)}`,
    '--announce',
    relay.address(),
    '--key-file',
    init.keyFile,
    '--addr-file',
    addrFile,
    '--no-allocate',
    String(await freePort()),
    init.service,
    `127.0.0.1:${port}`,
  ])
  const addrs = await waitFor(
    `${init.tag} listening`,
    async () => {
      if (proxy.child.exitCode != null) throw new Error(`proxy exited: ${proxy.stderr()}`)
      return await readFile(addrFile, 'utf8').then(lines, () => undefined)
    },
    { timeoutMs: 30_000 },
  ).catch((err: Error) => {
    throw new Error(`${err.message}\n${proxy.stderr()}`)
  })
  // What every peer will learn: the relay, nothing else.
  if (addrs.length !== 1 || !addrs[0].startsWith(`${relay.address()}/p2p/`)) {
    throw new Error(`${init.tag} announces ${addrs.join(' ')}, not only its relay`)
  }
  return { hello, proxy }
}

/** The non-empty lines of a file's text; undefined while it has none. */
function lines(text: string): string[] | undefined {
  const list = text.split('\n').filter((l) => l !== '')
  return list.length > 0 ? list : undefined
}
