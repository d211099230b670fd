import assert from 'node:assert/strict'
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { waitFor } from '@mtc/testkit'
import {
  JsXorStream,
  SodiumXorStream,
  shipSodiumAddon,
  sodiumBinding,
  type XorStream,
  xorBackend,
  xsalsa20Stream,
} from '../src/xsalsa20.ts'

const require = createRequire(import.meta.url)
/** What @libp2p/pnet uses: the reference keystream. */
const XSALSA20_PKG = require.resolve('xsalsa20')

/** The reference output of the old package, in a child so its WASM memory is untouched here. */
function referenceKeystream(nonce: Buffer, key: Buffer, bytes: number): Buffer {
  const script = `
    const XSalsa20 = require(${JSON.stringify(XSALSA20_PKG)})
    const x = XSalsa20(Buffer.from(process.argv[1], 'hex'), Buffer.from(process.argv[2], 'hex'))
    process.stdout.write(Buffer.from(x.update(new Uint8Array(${bytes}))))
  `
  const r = spawnSync(
    process.execPath,
    ['-e', script, nonce.toString('hex'), key.toString('hex')],
    {
      maxBuffer: 64 * 1024 * 1024,
      timeout: 60_000,
    },
  )
  assert.equal(r.status, 0, r.stderr?.toString())
  return r.stdout
}

/** Random chunk sizes, odd ones and ones that cross 64-byte block boundaries. */
function randomChunking(total: number, seed: number): number[] {
  let s = seed
  const next = (): number => {
    s = (s * 1103515245 + 12345) % 2 ** 31
    return s
  }
  const sizes: number[] = []
  let left = total
  while (left > 0) {
    const pick = next() % 5
    const size = [1, 63, 65, next() % 200, next() % 70_000][pick] || 1
    sizes.push(Math.min(size, left))
    left -= Math.min(size, left)
  }
  return sizes
}

function xorAll(stream: XorStream, data: Uint8Array, sizes: number[]): Buffer {
  const parts: Uint8Array[] = []
  let at = 0
  for (const size of sizes) {
    parts.push(stream.update(data.subarray(at, at + size)))
    at += size
  }
  return Buffer.concat(parts)
}

const backends: [string, (n: Uint8Array, k: Uint8Array) => XorStream][] = [
  ['js (noble)', (n, k) => new JsXorStream(n, k)],
]
const binding = sodiumBinding()
if (binding != null) backends.push(['sodium-native', (n, k) => new SodiumXorStream(n, k, binding)])

describe('XSalsa20 keystream of the PSK layer', () => {
  it('loads the native backend here (sodium-native prebuilt addon, no install script)', () => {
    assert.equal(xorBackend().name, 'sodium-native', xorBackend().detail)
    assert.ok(xsalsa20Stream(randomBytes(24), randomBytes(32)) instanceof SodiumXorStream)
  })

  for (const [name, make] of backends) {
    it(`${name}: byte-identical to xsalsa20@1.2.0 for random chunkings across block boundaries`, () => {
      const total = 300_000
      const nonce = randomBytes(24)
      const key = randomBytes(32)
      const reference = referenceKeystream(nonce, key, total)
      assert.equal(reference.byteLength, total)
      const data = randomBytes(total)
      const expected = Buffer.from(data.map((b, i) => b ^ reference[i]))
      for (let seed = 1; seed <= 8; seed++) {
        const sizes = randomChunking(total, seed)
        assert.ok(sizes.some((s) => s % 64 !== 0))
        const got = xorAll(make(nonce, key), data, sizes)
        assert.ok(got.equals(expected), `chunking seed ${seed} differs`)
      }
      // one byte at a time across a few blocks, and empty chunks in between
      const bytewise = make(nonce, key)
      const parts: Uint8Array[] = []
      for (let i = 0; i < 200; i++) {
        parts.push(bytewise.update(data.subarray(i, i + 1)))
        parts.push(bytewise.update(new Uint8Array(0)))
      }
      assert.ok(Buffer.concat(parts).equals(expected.subarray(0, 200)))
    })

    // The PSK layer XORs received bytes in place and sent ones straight into one buffer.
    it(`${name}: in place and into a view of a larger buffer, the same bytes as into a new one`, () => {
      const nonce = randomBytes(24)
      const key = randomBytes(32)
      const data = randomBytes(200_000)
      const sizes = randomChunking(data.byteLength, 7)
      const expected = xorAll(make(nonce, key), data, sizes)
      const inPlace = Buffer.from(data)
      const into = Buffer.alloc(data.byteLength + 10)
      const a = make(nonce, key)
      const b = make(nonce, key)
      let at = 0
      for (const size of sizes) {
        const chunk = inPlace.subarray(at, at + size)
        assert.equal(a.update(chunk, chunk), chunk)
        const view = into.subarray(at + 10, at + 10 + size)
        assert.equal(b.update(data.subarray(at, at + size), view), view)
        at += size
      }
      assert.ok(inPlace.equals(expected), 'in place')
      assert.ok(into.subarray(10).equals(expected), 'into a view')
      assert.ok(into.subarray(0, 10).equals(Buffer.alloc(10)), 'nothing before the view')
    })

    it(`${name}: XOR twice with the same nonce and key gives the input back`, () => {
      const nonce = randomBytes(24)
      const key = randomBytes(32)
      const data = randomBytes(10_000)
      const sizes = randomChunking(data.byteLength, 42)
      const back = xorAll(make(nonce, key), xorAll(make(nonce, key), data, sizes), [10_000])
      assert.ok(back.equals(data))
    })
  }

  it('rejects a nonce or key of the wrong size', () => {
    for (const [, make] of backends) {
      assert.throws(() => make(randomBytes(23), randomBytes(32)), RangeError)
      assert.throws(() => make(randomBytes(24), randomBytes(31)), RangeError)
    }
  })
})

/**
 * Issue 12 item 3: one 1 MiB call, then small calls alternating between two instances.
 * `xsalsa20@1.2.0` shares one WebAssembly memory; each instance's stale view grows it
 * again until `WebAssembly.Memory.grow()` throws. Run in a child with the given XOR.
 */
function isolationRepro(kind: 'old' | 'sodium-native' | 'js'): {
  status: number | null
  stderr: string
} {
  const make =
    kind === 'old'
      ? `const { default: XSalsa20 } = await import(${JSON.stringify(XSALSA20_PKG)}); const make = (n, k) => XSalsa20(n, k)`
      : `const m = await import(${JSON.stringify(new URL('../src/xsalsa20.ts', import.meta.url).href)});
         const make = (n, k) => ${kind === 'js' ? 'new m.JsXorStream(n, k)' : 'm.xsalsa20Stream(n, k)'}`
  const script = `
    ${make}
    const { randomBytes } = await import('node:crypto')
    const a = make(randomBytes(24), randomBytes(32))
    const b = make(randomBytes(24), randomBytes(32))
    a.update(new Uint8Array(1024 * 1024))
    for (let i = 0; i < 2000; i++) (i % 2 === 0 ? a : b).update(new Uint8Array(100))
    process.stdout.write('ok')
  `
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { timeout: 60_000 })
  return { status: r.status, stderr: r.stderr.toString() + r.stdout.toString() }
}

describe('isolation between connections (issue 12 item 3)', () => {
  it('the old xsalsa20@1.2.0 WASM path exhausts its shared memory (the bug)', () => {
    const r = isolationRepro('old')
    assert.notEqual(r.status, 0)
    assert.match(
      r.stderr,
      /RangeError: WebAssembly\.Memory\.grow\(\): Maximum memory size exceeded/,
    )
  })

  for (const kind of ['sodium-native', 'js'] as const) {
    it(`${kind}: the same calls run to the end`, () => {
      const r = isolationRepro(kind)
      assert.equal(r.status, 0, r.stderr)
      assert.match(r.stderr, /ok$/)
    })
  }
})

describe('shipping the addon beside a bundle', () => {
  it('replaces it without harming a process that has it loaded (a rebuild while proxies run)', {
    skip: sodiumBinding() == null ? 'no sodium-native addon for this platform' : undefined,
  }, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'mtc-addon-'))
    t.after(() => rm(dir, { recursive: true, force: true }))
    const addon = await shipSodiumAddon(dir)
    assert.ok(addon != null)
    // The child XORs with the shipped copy every millisecond, as a proxy does with traffic.
    const script = `
      const s = require(${JSON.stringify(addon)})
      const state = Buffer.alloc(s.crypto_stream_xor_STATEBYTES), m = Buffer.alloc(1024)
      s.crypto_stream_xor_init(state, Buffer.alloc(24), Buffer.alloc(32))
      let n = 0
      setInterval(() => { s.crypto_stream_xor_update(state, m, m); n++ }, 1)
      process.stdout.write('ready\\n')
      setTimeout(() => { process.stdout.write('alive ' + n + '\\n'); process.exit(0) }, 1500)
    `
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] })
    t.after(() => child.kill('SIGKILL'))
    let out = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d
    })
    const exited = once(child, 'exit')
    await waitFor('the child loaded the addon', () => out.includes('ready'), {
      timeoutMs: 30_000,
      intervalMs: 20,
    })
    await shipSodiumAddon(dir) // the rebuild
    const [code, signal] = await exited
    // Copying over the loaded file (copyFile) ended it with SIGBUS (code 135 or the signal).
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, out)
    assert.match(out, /alive \d+/)
  })
})
