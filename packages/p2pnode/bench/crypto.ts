/**
 * Micro-benchmarks of the transport's crypto, old against new, one process:
 *
 *   node packages/p2pnode/bench/crypto.ts
 *
 * - pnet XOR: MB/s of xsalsa20@1.2.0 (WASM, what @libp2p/pnet uses), our sodium-native
 *   backend and our pure-JS fallback, at a few chunk sizes.
 * - Noise seal/open: µs per message of noise's default crypto, its WASM path, Node's with
 *   a cached KeyObject, libsodium (sodium-native) and ours, seal and open apart, at a few
 *   sizes, to choose NOISE_NODE_CRYPTO_MIN_BYTES. `--noise` runs only these.
 */
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { asCrypto, defaultCrypto, nodeCrypto } from '@chainsafe/libp2p-noise/crypto'
import { keyObjectCrypto, meshNoiseCrypto, sodiumCrypto } from '../src/noise-crypto.ts'
import { JsXorStream, SodiumXorStream, sodiumBinding } from '../src/xsalsa20.ts'

const require = createRequire(import.meta.url)
const XSalsa20 = require('xsalsa20') as (
  n: Uint8Array,
  k: Uint8Array,
) => { update(d: Uint8Array): Uint8Array }

/** Runs `fn` for about `ms` (after a warm-up) and returns calls per second. */
function rate(fn: () => void, ms = 400): number {
  for (let i = 0; i < 200; i++) fn()
  let calls = 0
  const start = performance.now()
  let now = start
  while (now - start < ms) {
    for (let i = 0; i < 50; i++) fn()
    calls += 50
    now = performance.now()
  }
  return (calls * 1000) / (now - start)
}

function benchXor(): void {
  const nonce = randomBytes(24)
  const key = randomBytes(32)
  const binding = sodiumBinding()
  const impls: [string, { update(d: Uint8Array): Uint8Array }][] = [
    ['xsalsa20@1.2.0 (WASM)', XSalsa20(nonce, key)],
    [
      'sodium-native',
      binding != null ? new SodiumXorStream(nonce, key, binding) : XSalsa20(nonce, key),
    ],
    ['js fallback (noble)', new JsXorStream(nonce, key)],
  ]
  console.log('pnet XOR, MB/s (one stream, chunks of the given size)')
  console.log(['chunk'.padEnd(8), ...impls.map(([n]) => n.padStart(24))].join(''))
  for (const size of [100, 1_500, 16_384, 65_536]) {
    const data = randomBytes(size)
    const row = impls.map(([, x]) => ((rate(() => x.update(data)) * size) / 1e6).toFixed(0))
    console.log([String(size).padEnd(8), ...row.map((r) => r.padStart(24))].join(''))
  }
}

function benchNoise(): void {
  const k = randomBytes(32)
  const nonce = new Uint8Array(12)
  const ad = new Uint8Array(0)
  /** What meshNoiseCrypto was before libsodium: noise's WASM below 512 B, the KeyObject up. */
  const before: ICryptoInterface = {
    ...keyObjectCrypto,
    chaCha20Poly1305Encrypt: (p, n, ad, k) =>
      (p.byteLength < 512 ? defaultCrypto : keyObjectCrypto).chaCha20Poly1305Encrypt(p, n, ad, k),
    chaCha20Poly1305Decrypt: (c, n, ad, k, dst) =>
      (c.byteLength < 512 ? defaultCrypto : keyObjectCrypto).chaCha20Poly1305Decrypt(
        c,
        n,
        ad,
        k,
        dst,
      ),
  }
  const impls = [
    ['noise default', defaultCrypto],
    ['node, raw key', nodeCrypto],
    ['WASM (as)', asCrypto],
    ['node, KeyObject', keyObjectCrypto],
    ['sodium-native', sodiumCrypto ?? defaultCrypto],
    ['before', before],
    ['ours (threshold)', meshNoiseCrypto],
  ] as const
  for (const what of ['seal', 'open'] as const) {
    console.log(`\nNoise ChaCha20-Poly1305, µs per ${what} of one message`)
    console.log(['bytes'.padEnd(8), ...impls.map(([n]) => n.padStart(18))].join(''))
    for (const size of [64, 300, 1_200, 4_096, 8_192, 12_288, 16_384, 32_768, 65_519]) {
      const plain = randomBytes(size)
      const row = impls.map(([, c]) => {
        const sealed = Buffer.from(c.chaCha20Poly1305Encrypt(plain, nonce, ad, k).subarray())
        const per =
          what === 'seal'
            ? rate(() => c.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
            : rate(() => c.chaCha20Poly1305Decrypt(sealed, nonce, ad, k))
        return (1e6 / per).toFixed(2)
      })
      console.log([String(size).padEnd(8), ...row.map((r) => r.padStart(18))].join(''))
    }
  }
}

if (!process.argv.includes('--noise')) benchXor()
benchNoise()
