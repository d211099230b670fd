/**
 * The proxy runs as one bundle (dist/proxy.mjs, also in mtc/base) without node_modules:
 * its PSK layer must still find sodium-native's native addon (shipped beside the bundle
 * by `bundle()`), and a bundle without it must fall back to the pure-JS XSalsa20.
 */
import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { XOR_BACKEND_METRIC } from '@mtc/p2pnode'
import { freePort, httpGet, run, runToEnd, stopAll, tempDir, waitFor } from '@mtc/testkit'
import { bundle } from '../scripts/bundle.ts'

const DIST = new URL('../dist/', import.meta.url).pathname
/** p2pnode's built XSalsa20 module, by path (the test's entry lives in a temp dir). */
const XSALSA20_MODULE = fileURLToPath(import.meta.resolve('@mtc/p2pnode/xsalsa20'))
/** The built malloc_trim loader, by path. */
const MALLOC_TRIM_MODULE = join(DIST, 'src/malloc-trim.js')

after(async () => {
  await stopAll()
})

/**
 * Bundles an entry of `lines` (in a temp dir) and runs it twice: with the `addonFile`
 * bundle() put beside it (`addon`: its path, undefined when it was not put there), then
 * with that file removed.
 */
async function bundleWithAndWithout(addonFile: string, lines: string[]) {
  const dir = await tempDir('mtc-bundle-')
  try {
    const entry = join(dir.path, 'entry.mjs')
    await writeFile(entry, lines.join('\n'))
    const out = join(dir.path, 'out', 'entry.bundle.mjs')
    await bundle(entry, out)
    const path = join(dir.path, 'out', addonFile)
    const addon = existsSync(path) ? path : undefined
    const native = await runToEnd(process.execPath, [out])
    if (addon != null) await rm(addon)
    const without = await runToEnd(process.execPath, [out])
    return { addon, native, without }
  } finally {
    await dir.remove()
  }
}

describe('the proxy bundle and the native XSalsa20', () => {
  it('ships the addon beside dist/proxy.mjs and the running proxy uses it', async () => {
    assert.ok(existsSync(join(DIST, 'proxy.mjs')), 'run `pnpm build` first')
    assert.ok(existsSync(join(DIST, 'sodium-native.node')), 'bundle() copies the addon')
    const dir = await tempDir('mtc-bundle-')
    try {
      const key = join(dir.path, 'swarm.key')
      assert.equal((await runToEnd('mtc-keygen', ['swarm-key', '--out', key])).code, 0)
      const metrics = await freePort()
      const proxy = run('proxy', [
        '--psk-file',
        key,
        '--metrics',
        `127.0.0.1:${metrics}`,
        String(await freePort()),
      ])
      try {
        const body = await waitFor(
          'the proxy metrics',
          async () => {
            const r = await httpGet(`http://127.0.0.1:${metrics}/metrics`).catch(() => undefined)
            return r?.status === 200 ? r.body : undefined
          },
          { timeoutMs: 20_000 },
        )
        assert.match(
          body,
          new RegExp(`^${XOR_BACKEND_METRIC}\\{backend="sodium-native"\\} 1$`, 'm'),
        )
      } finally {
        await proxy.stop(5_000)
      }
    } finally {
      await dir.remove()
    }
  })

  it('a bundle without the addon loads the pure-JS fallback and XORs the same bytes', async () => {
    const { addon, native, without } = await bundleWithAndWithout('sodium-native.node', [
      `import { xorBackend, JsXorStream, xsalsa20Stream } from '${XSALSA20_MODULE}'`,
      'const n = new Uint8Array(24).fill(7), k = new Uint8Array(32).fill(9), d = new Uint8Array(1000).fill(1)',
      'const same = Buffer.from(xsalsa20Stream(n, k).update(d)).equals(Buffer.from(new JsXorStream(n, k).update(d)))',
      'console.log(JSON.stringify({ backend: xorBackend().name, same }))',
    ])
    assert.ok(addon, 'bundle() puts the addon beside a bundle with the mesh node')
    assert.deepEqual(
      JSON.parse(native.stdout),
      { backend: 'sodium-native', same: true },
      native.stderr,
    )
    assert.equal(without.code, 0, without.stderr)
    assert.deepEqual(JSON.parse(without.stdout), { backend: 'js', same: true })
  })
})

describe('the proxy bundle and malloc_trim (koffi)', () => {
  it('ships koffi.node beside a bundle that trims, which runs without it too', async () => {
    assert.ok(existsSync(join(DIST, 'koffi.node')), 'bundle() copies the addon beside proxy.mjs')
    const { addon, native, without } = await bundleWithAndWithout('koffi.node', [
      `import { loadMallocTrim } from '${MALLOC_TRIM_MODULE}'`,
      'const r = loadMallocTrim()',
      "console.log(JSON.stringify('trim' in r ? { path: r.path, trimmed: typeof r.trim() } : r))",
    ])
    assert.ok(addon, 'bundle() puts the addon beside a bundle that trims')
    assert.deepEqual(JSON.parse(native.stdout), { path: addon, trimmed: 'boolean' }, native.stderr)
    assert.equal(without.code, 0, without.stderr)
    assert.deepEqual(JSON.parse(without.stdout), { error: 'koffi addon not found' })
  })
})
