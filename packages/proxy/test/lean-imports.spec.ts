import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readdir, readFile } from 'node:fs/promises'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'

describe('lean imports', () => {
  it('loading the proxy does not load undici (an ESM import of node:http would, ~12 MB RSS)', async () => {
    const main = new URL('../src/main.ts', import.meta.url).href
    const script = `await import('${main}'); console.log(process.moduleLoadList.filter((m) => m.includes('undici')).join(','))`
    const { stdout } = await promisify(execFile)(process.execPath, [
      '--input-type=module',
      '-e',
      script,
    ])
    assert.equal(stdout.trim(), '', 'use `http` from @mtc/p2pnode, not an import from node:http')
  })
})

/**
 * Package roots are client/library surfaces (issue #16): what another package imports
 * must not load a daemon's dependencies. Each root is imported by name, from a package
 * that depends on it, in a fresh process that records every module it loads.
 */
describe('package roots', () => {
  const packages = new URL('../../', import.meta.url)
  const DAEMON_DEPS = /\/node_modules\/(etcd3|@grpc|dockerode|docker-modem|ssh2)\//

  async function modulesLoadedBy(specifier: string, from: string): Promise<string[]> {
    const script = `
      import { registerHooks } from 'node:module'
      const seen = []
      registerHooks({ load(url, context, next) { seen.push(url); return next(url, context) } })
      await import('${specifier}')
      console.log(JSON.stringify(seen))`
    const { stdout } = await promisify(execFile)(
      process.execPath,
      ['--input-type=module', '-e', script],
      { cwd: new URL(`${from}/`, packages), maxBuffer: 16 * 1024 * 1024 },
    )
    return JSON.parse(stdout) as string[]
  }

  for (const [specifier, from] of [
    ['@mtc/hash-lookup', 'allocator'],
    ['@mtc/hash-lookup/client', 'proxy'],
    ['@mtc/allocator', 'proxy'],
    ['@mtc/blobs', 'allocator'],
    ['@mtc/proxy', 'topology'],
  ]) {
    it(`importing ${specifier} loads no etcd3, gRPC or Docker client`, async () => {
      const loaded = await modulesLoadedBy(specifier, from)
      assert.ok(loaded.length > 0, 'the hook saw no module: the test would pass for nothing')
      assert.deepEqual(
        loaded.filter((url) => DAEMON_DEPS.test(url)),
        [],
        `${specifier} pulls in a daemon; daemons are reached through /daemon`,
      )
    })
  }

  it('the daemons are loaded through their ./daemon exports', async () => {
    const hl = await modulesLoadedBy('@mtc/hash-lookup/daemon', 'allocator')
    assert.ok(hl.some((url) => url.includes('/node_modules/etcd3/')))
    const allocator = await modulesLoadedBy('@mtc/allocator/daemon', 'proxy')
    assert.ok(allocator.some((url) => url.includes('/node_modules/dockerode/')))
  })

  it('the proxy root exports no main (the daemon is @mtc/proxy/daemon)', async () => {
    const root = await import('@mtc/proxy')
    assert.equal('main' in root, false)
    const daemon = await import('@mtc/proxy/daemon')
    assert.equal(typeof daemon.main, 'function')
  })

  it('no module of a package root imports its daemon', async () => {
    for (const pkg of ['hash-lookup', 'allocator']) {
      const src = new URL(`${pkg}/src/`, packages)
      for (const file of await readdir(src)) {
        if (!file.endsWith('.ts')) continue
        const text = await readFile(new URL(file, src), 'utf8')
        assert.doesNotMatch(text, /from '\.\/daemon\//, `${pkg}/src/${file} imports the daemon`)
      }
    }
    const protocol = await readFile(new URL('hash-lookup/src/protocol.ts', packages), 'utf8')
    assert.doesNotMatch(protocol, /etcd/, 'the wire protocol does not depend on storage')
  })
})
