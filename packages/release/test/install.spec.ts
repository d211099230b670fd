import assert from 'node:assert/strict'
import { chmod, readdir, readFile, writeFile } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { formatSwarmKey, generatePsk, XOR_BACKEND_METRIC } from '@mtc/p2pnode'
import {
  docker,
  dockerAvailable,
  ensureImages,
  freePort,
  type Proc,
  readLinesWhenReady,
  removeContainers,
  run,
  runToEnd,
  skipUnlessCi,
  stopAll,
  tempDir,
  waitFor,
} from '@mtc/testkit'
import { PROGRAMS, packageVersion, packRelease } from '../src/release.ts'
import { parseEnvFile, unitCommand } from './unit-command.ts'

/**
 * The release as an operator gets it: packed (packages/release/src/release.ts), unpacked
 * in a directory of its own, installed by its install.sh into a temporary prefix, and a
 * mesh run from there (ping-monitor, hl-service with its own etcd, a client proxy; the
 * allocator on Docker when a daemon answers) with the command lines of the installed
 * systemd units. Nothing runs from the workspace but this test.
 */
const UNITS = ['mtc-ping-monitor', 'mtc-hl-service', 'mtc-allocator', 'mtc-proxy']
/** Packing bundles six programs with esbuild: seconds, more on a loaded machine. */
const PACK_TIMEOUT_MS = 120_000
/** A daemon writes its --addr-file once listening; hl-service first starts etcd. */
const START_TIMEOUT_MS = 30_000
/** The client proxy finds the instance through the DHT. */
const ROUTE_TIMEOUT_MS = 45_000
/** A cold start: the allocator loads the image from hl-service and starts the container. */
const COLD_START_TIMEOUT_MS = 90_000

const dir = await tempDir('mtc-release-test-')
const prefix = join(dir.path, 'opt/mtc')
const etc = join(dir.path, 'etc/mtc')
const unitDir = join(dir.path, 'systemd')
const stateRoot = join(dir.path, 'var/lib')
const pskFile = join(etc, 'swarm.key')

async function install(
  release: string,
  binDir = '',
): Promise<{ code: number; stdout: string; stderr: string }> {
  return await runToEnd(
    join(release, 'install.sh'),
    ['--prefix', prefix, '--etc-dir', etc, '--unit-dir', unitDir, '--bin-dir', binDir, '--no-user'],
    { timeoutMs: 60_000 },
  )
}

let releaseDir: string

before(async () => {
  const tarball = await Promise.race([
    packRelease(join(dir.path, 'out'), await packageVersion()),
    new Promise<never>((_, fail) =>
      setTimeout(() => fail(new Error('packing took too long')), PACK_TIMEOUT_MS).unref(),
    ),
  ])
  const unpacked = join(dir.path, 'unpacked')
  const tar = await runToEnd('sh', [
    '-c',
    `mkdir -p "$1" && tar -xzf "$2" -C "$1"`,
    'sh',
    unpacked,
    tarball,
  ])
  assert.equal(tar.code, 0, tar.stderr)
  const [top] = await readdir(unpacked)
  releaseDir = join(unpacked, top)
  const r = await install(releaseDir)
  assert.equal(r.code, 0, r.stderr)
  await writeFile(pskFile, formatSwarmKey(generatePsk()), { mode: 0o600 })
})

after(async () => {
  await stopAll()
  await dir.remove()
})

test('the tarball is named for its version and platform and installs every program', async () => {
  assert.match(releaseDir, /\/mtc-\d+\.\d+\.\d+-linux-x64$/)
  for (const { name } of PROGRAMS) {
    const r = await runToEnd(join(prefix, 'bin', name), ['--version'])
    assert.equal(r.code, 0, `${name}: ${r.stderr}`)
    assert.equal(r.stdout.trim(), `${name} ${await packageVersion()}`)
  }
  assert.deepEqual((await readdir(unitDir)).sort(), UNITS.map((u) => `${u}.service`).sort())
})

test('the example settings use only flags their programs know', async () => {
  for (const name of ['ping-monitor', 'hl-service', 'allocator', 'proxy']) {
    const env = parseEnvFile(await readFile(join(releaseDir, 'deploy/env', `${name}.env`), 'utf8'))
    const flags = (env.MTC_ARGS ?? '').split(/\s+/).filter((w) => w.startsWith('--'))
    assert.ok(flags.length > 0, name)
    const help = await runToEnd(join(prefix, 'bin', name), ['--help'])
    for (const flag of flags)
      assert.match(help.stdout, new RegExp(`^  ${flag} `, 'm'), `${name} ${flag}`)
  }
  const mesh = parseEnvFile(await readFile(join(releaseDir, 'deploy/env/mesh.env'), 'utf8'))
  assert.match(mesh.P2P_BOOTSTRAPS, /^\/ip4\/[\d.]+\/tcp\/4001\/p2p\//)
})

test('install.sh again replaces the programs and keeps the settings', async () => {
  const envFile = join(etc, 'proxy.env')
  const edited = '# edited by the operator\nMTC_ARGS=--metrics 127.0.0.1:9999 4242\n'
  await writeFile(envFile, edited)
  await writeFile(join(prefix, 'lib', 'stale.mjs'), 'left from an older release\n')
  const binDir = join(dir.path, 'usr-local-bin')
  const r = await install(releaseDir, binDir)
  assert.equal(r.code, 0, r.stderr)
  assert.equal(await readFile(envFile, 'utf8'), edited)
  // The links in --bin-dir run the programs (the wrappers find lib/ through them).
  const linked = await runToEnd(join(binDir, 'hl-cli'), ['--version'])
  assert.equal(linked.code, 0, linked.stderr)
  assert.ok(!(await readdir(join(prefix, 'lib'))).includes('stale.mjs'))
  const bad = await runToEnd(join(releaseDir, 'install.sh'), ['--prefix', 'relative/path'])
  assert.equal(bad.code, 1)
  assert.match(bad.stderr, /--prefix must be an absolute path/)
})

test("under root's umask 077, install.sh still leaves a tree the service user can run", {
  skip: process.getuid?.() === 0 ? undefined : 'needs root (setpriv to another user)',
}, async () => {
  const other = join(dir.path, 'umask077')
  const r = await runToEnd('sh', [
    '-c',
    'umask 077; exec "$@"',
    'sh',
    join(releaseDir, 'install.sh'),
    '--prefix',
    join(other, 'opt'),
    '--etc-dir',
    join(other, 'etc'),
    '--unit-dir',
    join(other, 'units'),
    '--bin-dir',
    '',
    '--no-user',
  ])
  assert.equal(r.code, 0, r.stderr)
  await chmod(dir.path, 0o755) // mkdtemp made it 0700; the install itself is the subject
  try {
    const asNobody = await runToEnd('setpriv', [
      '--reuid=nobody',
      '--regid=nogroup',
      '--clear-groups',
      join(other, 'opt/bin/proxy'),
      '--version',
    ])
    assert.equal(asNobody.code, 0, asNobody.stderr)
    assert.match(asNobody.stdout, /^proxy /)
  } finally {
    await chmod(dir.path, 0o700)
  }
})

describe('systemd units', async () => {
  const which = await runToEnd('sh', ['-c', 'command -v systemd-analyze'])
  const skip = skipUnlessCi(
    which.code === 0 ? undefined : 'needs systemd-analyze (Debian: systemd)',
  )

  test('systemd-analyze verify: no error and no warning for any installed unit', {
    skip,
  }, async () => {
    for (const unit of UNITS) {
      const r = await runToEnd('systemd-analyze', ['verify', join(unitDir, `${unit}.service`)])
      assert.equal(r.code, 0, `${unit}: ${r.stderr}`)
      // verify exits 0 on unknown keys and bad values (it only warns): none may be printed.
      assert.equal(r.stderr.trim(), '', `${unit}: ${r.stderr}`)
    }
    // The check sees a broken unit: a typo in a setting is a warning, a missing binary an error.
    const broken = join(dir.path, 'mtc-broken.service')
    const proxyUnit = await readFile(join(unitDir, 'mtc-proxy.service'), 'utf8')
    await writeFile(broken, proxyUnit.replace('ProtectSystem=strict', 'ProtectSystem=strickt'))
    const typo = await runToEnd('systemd-analyze', ['verify', broken])
    assert.match(typo.stderr, /Failed to parse protect system value/)
    await writeFile(broken, proxyUnit.replaceAll(prefix, join(dir.path, 'nowhere')))
    assert.notEqual((await runToEnd('systemd-analyze', ['verify', broken])).code, 0)
  })

  test('systemd-analyze security: every unit is sandboxed (exposure at most 2.5 of 10)', {
    skip,
  }, async () => {
    for (const unit of UNITS) {
      const r = await runToEnd('systemd-analyze', [
        'security',
        '--offline=true',
        '--threshold=25',
        join(unitDir, `${unit}.service`),
      ])
      assert.equal(r.code, 0, `${unit}: ${r.stdout.split('\n').at(-2)}`)
    }
  })
})

describe('a mesh from the installed tree, started as the units start it', () => {
  let gateway: number
  let proxyMetrics: number
  let hlAddr: string

  /** Runs `unit` with its unit's command line and environment files. */
  async function startUnit(unit: string): Promise<Proc> {
    const cmd = await unitCommand(join(unitDir, `${unit}.service`), {
      credentials: join(dir.path, 'credentials', unit),
      stateRoot,
    })
    assert.ok(cmd.argv[0].startsWith(prefix), cmd.argv[0])
    return run(cmd.argv[0], cmd.argv.slice(1), { env: cmd.env, cwd: dir.path })
  }

  async function addrOf(proc: Proc, file: string): Promise<string> {
    const lines = await readLinesWhenReady(file, START_TIMEOUT_MS).catch((err: Error) => {
      throw new Error(`${err.message}\n${proc.stderr()}`)
    })
    return lines[0]
  }

  const loopback = async (name: string, metrics?: number) =>
    `--listen /ip4/127.0.0.1/tcp/0 --metrics 127.0.0.1:${metrics ?? (await freePort())} --addr-file ${join(dir.path, `${name}.addr`)}`

  let echo: Server

  before(async () => {
    await writeFile(join(etc, 'ping-monitor.env'), `MTC_ARGS=${await loopback('ping-monitor')}\n`)
    const pm = await startUnit('mtc-ping-monitor')
    const bootstrap = await addrOf(pm, join(dir.path, 'ping-monitor.addr'))
    // The identity is kept in the state directory: the same peer ID after a restart.
    assert.ok((await readdir(join(stateRoot, 'mtc-ping-monitor'))).includes('identity.key'))
    // Its status page ships with it (static/ beside lib/).
    const pmMetrics = /--metrics 127\.0\.0\.1:(\d+)/.exec(
      await readFile(join(etc, 'ping-monitor.env'), 'utf8'),
    )?.[1]
    const page = await fetch(`http://127.0.0.1:${pmMetrics}/`)
    assert.equal(page.status, 200)
    assert.match(await page.text(), /<script src="\/?status\.js"/)
    await writeFile(join(etc, 'mesh.env'), `P2P_BOOTSTRAPS=${bootstrap}\n`)

    const etcdPorts = `--etcd-client-port ${await freePort()} --etcd-peer-port ${await freePort()}`
    await writeFile(
      join(etc, 'hl-service.env'),
      `MTC_ARGS=--new-etcd-cluster ${etcdPorts} ${await loopback('hl-service')}\n`,
    )
    const hl = await startUnit('mtc-hl-service')
    hlAddr = await addrOf(hl, join(dir.path, 'hl-service.addr'))

    gateway = await freePort()
    proxyMetrics = await freePort()
    await writeFile(
      join(etc, 'proxy.env'),
      `MTC_ARGS=${await loopback('proxy', proxyMetrics)} ${gateway}\n`,
    )
    const proxy = await startUnit('mtc-proxy')
    await addrOf(proxy, join(dir.path, 'proxy.addr'))
  })

  after(() => {
    echo?.close()
  })

  test('hl-cli registers a service and the client proxy serves a request to its instance', async () => {
    // The instance: a plain HTTP server behind a service-mode proxy of the installed tree.
    echo = createServer((req, res) => res.end(`echo ${req.url}\n`))
    await new Promise<void>((ok) => echo.listen(0, '127.0.0.1', ok))
    const echoPort = (echo.address() as { port: number }).port
    const sidecar = run(join(prefix, 'bin/proxy'), [
      '--psk-file',
      pskFile,
      '--bootstrap',
      (await readFile(join(dir.path, 'ping-monitor.addr'), 'utf8')).split('\n')[0],
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--metrics',
      `127.0.0.1:${await freePort()}`,
      '--no-allocate',
      String(await freePort()),
      'echo',
      `127.0.0.1:${echoPort}`,
    ])

    const hlCli = join(prefix, 'bin/hl-cli')
    const add = await runToEnd(hlCli, [
      '--psk-file',
      pskFile,
      '--hl',
      hlAddr,
      'add',
      '--image-id',
      `sha256:${'ab'.repeat(32)}`,
      'example/echo:1',
      'echo',
    ])
    assert.equal(add.code, 0, add.stderr)
    const get = await runToEnd(hlCli, [
      '--psk-file',
      pskFile,
      '--hl',
      hlAddr,
      '--json',
      'get',
      'echo',
    ])
    assert.equal(get.code, 0, get.stderr)
    assert.match(get.stdout, /example\/echo:1/)

    const body = await waitFor(
      'a request through the installed client proxy',
      async () => {
        const res = await fetch(`http://127.0.0.1:${gateway}/echo/hi?x=1`, {
          signal: AbortSignal.timeout(10_000),
        })
        const text = await res.text()
        return res.status === 200 ? text : undefined
      },
      { timeoutMs: ROUTE_TIMEOUT_MS, intervalMs: 500 },
    ).catch((err: Error) => {
      throw new Error(`${err.message}\nsidecar: ${sidecar.stderr()}`)
    })
    assert.equal(body, 'echo /hi?x=1\n')
    // sodium-native's addon was shipped beside the bundles, and found there.
    const metrics = await (await fetch(`http://127.0.0.1:${proxyMetrics}/metrics`)).text()
    assert.match(metrics, new RegExp(`^${XOR_BACKEND_METRIC}\\{backend="sodium-native"\\} 1$`, 'm'))
  })

  describe('with Docker', async () => {
    const skip = skipUnlessCi((await dockerAvailable()) ? undefined : 'needs dockerd')
    let allocatorId: string | undefined

    after(async () => {
      if (allocatorId != null) await removeContainers(`mtc.managed-by=${allocatorId}`)
    })

    test('the installed allocator starts hello-world-server on demand', { skip }, async () => {
      await ensureImages()
      const tarball = join(dir.path, 'hello-world-server.tar')
      await docker(['save', '-o', tarball, 'mtc/hello-world-server:1.0'], { timeoutMs: 120_000 })
      const add = await runToEnd(
        join(prefix, 'bin/hl-cli'),
        [
          '--psk-file',
          pskFile,
          '--hl',
          hlAddr,
          'add',
          '--file',
          tarball,
          'mtc/hello-world-server:1.0',
          'hello',
        ],
        { timeoutMs: 120_000 },
      )
      assert.equal(add.code, 0, add.stderr)

      await writeFile(
        join(etc, 'allocator.env'),
        `MTC_ARGS=--host-ip 127.0.0.1 ${await loopback('allocator')}\n`,
      )
      const allocator = await startUnit('mtc-allocator')
      allocatorId = (await addrOf(allocator, join(dir.path, 'allocator.addr'))).split('/p2p/')[1]

      // Until the allocator is known to the client (DHT), the gateway answers 503.
      let last = ''
      const body = await waitFor(
        'hello-world-server through the installed proxy',
        async () => {
          const r = await fetch(`http://127.0.0.1:${gateway}/hello/`, {
            signal: AbortSignal.timeout(COLD_START_TIMEOUT_MS),
          })
          last = `${r.status} ${await r.text()}`
          return r.status === 200 ? last : undefined
        },
        { timeoutMs: COLD_START_TIMEOUT_MS, intervalMs: 1000 },
      ).catch((err: Error) => {
        throw new Error(`${err.message}; last: ${last}\nallocator: ${allocator.stderr()}`)
      })
      assert.match(body, /Hello, world/)
    })
  })
})
