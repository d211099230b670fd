import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { defaultCrypto, pureJsCrypto } from '@chainsafe/libp2p-noise/crypto'
import { Uint8ArrayList } from 'uint8arraylist'
import { NOISE_NODE_CRYPTO_MIN_BYTES } from '../src/constants.ts'
import {
  keyObjectCrypto,
  meshCrypto,
  meshNoiseCrypto,
  sessionKey,
  sodiumCrypto,
} from '../src/noise-crypto.ts'

/** Noise's input type (its Uint8ArrayList is v2; ours is v3, the same class at run time). */
type NoiseInput = Parameters<typeof meshNoiseCrypto.chaCha20Poly1305Encrypt>[0]

const bytes = (data: Uint8Array | { subarray(): Uint8Array }): Buffer =>
  Buffer.from(data instanceof Uint8Array ? data : data.subarray())

/** A list of `data` cut at `at` (and a third, empty-free part when long enough). */
const listOf = (data: Uint8Array, at: number): NoiseInput => {
  const cuts = [0, Math.min(at, data.byteLength), Math.max(at, data.byteLength >> 1)]
  const list = new Uint8ArrayList()
  for (let i = 0; i < cuts.length; i++) {
    const part = data.subarray(cuts[i], cuts[i + 1] ?? data.byteLength)
    if (part.byteLength > 0) list.append(part)
  }
  return list as unknown as NoiseInput
}

const nonceOf = (n: number): Buffer => {
  const nonce = Buffer.alloc(12)
  nonce.writeUInt32LE(n, 4) // as noise's Nonce: a 32-bit counter at byte 4
  return nonce
}

const T = NOISE_NODE_CRYPTO_MIN_BYTES
/** Every size class: empty, tiny, noise's 1,200 B WASM bound, our threshold, a full message. */
const SIZES = [0, 1, 15, 16, 17, 64, 300, 1199, 1200, 1201, T - 1, T, T + 1, 16_384, 65_519]

/** Ours as deployed, ours where the addon did not load, and each implementation alone. */
const impls: [string, ICryptoInterface][] = [
  ['meshNoiseCrypto', meshNoiseCrypto],
  ['without the addon', meshCrypto(undefined)],
  ['KeyObject alone', keyObjectCrypto],
]
if (sodiumCrypto != null) impls.push(['sodium alone', sodiumCrypto])

describe('Noise crypto: libsodium for small messages, a cached KeyObject for large', () => {
  it('loads libsodium here (the prebuilt addon the PSK layer uses)', () => {
    assert.ok(sodiumCrypto != null, 'sodium-native addon did not load')
  })

  it('makes one KeyObject per key array, and a new one when its bytes change', () => {
    const k = randomBytes(32)
    const first = sessionKey(k)
    assert.equal(sessionKey(k), first)
    assert.notEqual(sessionKey(Buffer.from(k)), first, 'another array, its own entry')
    k[0] ^= 1
    const changed = sessionKey(k)
    assert.notEqual(changed, first)
    assert.ok(bytes(changed.export()).equals(k))
  })

  for (const [name, crypto] of impls) {
    it(`${name}: seals and opens exactly as noise's reference does, at every size class`, () => {
      const k = randomBytes(32)
      const ad = randomBytes(32)
      for (const [n, size] of SIZES.entries()) {
        const nonce = nonceOf(n + 0x01020304)
        const plain = randomBytes(size)
        const reference = bytes(pureJsCrypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
        const ours = bytes(crypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
        assert.ok(ours.equals(reference), `seal of ${size} bytes`)
        // a list in (noise passes its write buffer), cut across the 64-byte block
        assert.ok(
          bytes(crypto.chaCha20Poly1305Encrypt(listOf(plain, 7), nonce, ad, k)).equals(reference),
          `seal of ${size} bytes as a list`,
        )
        const opened = crypto.chaCha20Poly1305Decrypt(reference, nonce, ad, k)
        assert.ok(bytes(opened).equals(plain), `open of ${size} bytes`)
        assert.ok(
          bytes(crypto.chaCha20Poly1305Decrypt(listOf(reference, 7), nonce, ad, k)).equals(plain),
          `open of ${size} bytes as a list`,
        )
        // the tag cut in two by the list (the last read ends inside it)
        const tagCut = listOf(reference, reference.byteLength - 5)
        assert.ok(bytes(crypto.chaCha20Poly1305Decrypt(tagCut, nonce, ad, k)).equals(plain))
        assert.ok(bytes(defaultCrypto.chaCha20Poly1305Decrypt(ours, nonce, ad, k)).equals(plain))
      }
    })

    it(`${name}: opens into noise's dst in place, and never writes into a ciphertext without one`, () => {
      const k = randomBytes(32)
      const ad = randomBytes(32)
      for (const size of SIZES) {
        const nonce = nonceOf(size)
        const plain = randomBytes(size)
        const sealed = bytes(pureJsCrypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
        // noise's handshake hashes the ciphertext after opening it (no dst): it must stay
        const copy = Buffer.from(sealed)
        const asList = listOf(sealed, 3)
        assert.ok(bytes(crypto.chaCha20Poly1305Decrypt(sealed, nonce, ad, k)).equals(plain))
        assert.ok(bytes(crypto.chaCha20Poly1305Decrypt(asList, nonce, ad, k)).equals(plain))
        assert.ok(sealed.equals(copy), `${size} bytes: the ciphertext was written to`)
        // noise's transport: dst is the message's own bytes less the tag
        const dst = sealed.subarray(0, size)
        const opened = crypto.chaCha20Poly1305Decrypt(sealed, nonce, ad, k, dst)
        assert.ok(bytes(opened).equals(plain), `open of ${size} bytes with a dst`)
        const inList = Buffer.from(copy)
        const fromList = crypto.chaCha20Poly1305Decrypt(
          new Uint8ArrayList(inList) as unknown as NoiseInput,
          nonce,
          ad,
          k,
          inList.subarray(0, size),
        )
        assert.ok(bytes(fromList).equals(plain), `open of ${size} bytes from a list with a dst`)
      }
    })

    it(`${name}: refuses a tampered tag, ciphertext, AD or nonce, at every size class`, () => {
      const k = randomBytes(32)
      const ad = randomBytes(32)
      for (const size of SIZES) {
        const nonce = nonceOf(size)
        const sealed = bytes(crypto.chaCha20Poly1305Encrypt(randomBytes(size), nonce, ad, k))
        const flipped = (at: number): Buffer => {
          const copy = Buffer.from(sealed)
          copy[at] ^= 0x40
          return copy
        }
        const cases: [string, Uint8Array | NoiseInput, Uint8Array, Uint8Array][] = [
          ['tag', flipped(sealed.byteLength - 1), nonce, ad],
          ['tag, in a list', listOf(flipped(size), 5), nonce, ad],
          ['ad', sealed, nonce, Buffer.concat([ad.subarray(1), Buffer.from([ad[0] ^ 1])])],
          ['empty ad', sealed, nonce, new Uint8Array(0)],
          ['nonce', sealed, nonceOf(size + 1), ad],
        ]
        if (size > 0) cases.push(['ciphertext', flipped(size - 1), nonce, ad])
        for (const [what, c, n, a] of cases) {
          assert.throws(
            () => crypto.chaCha20Poly1305Decrypt(c, n, a, k),
            `${size} bytes, tampered ${what}: opened`,
          )
          const withDst = bytes(c)
          assert.throws(
            () => crypto.chaCha20Poly1305Decrypt(withDst, n, a, k, withDst.subarray(0, size)),
            `${size} bytes, tampered ${what}, with a dst: opened`,
          )
        }
        // and the key
        assert.throws(() => crypto.chaCha20Poly1305Decrypt(sealed, nonce, ad, randomBytes(32)))
      }
    })

    it(`${name}: refuses a message shorter than its tag, or a wrong key or nonce size, by throwing`, () => {
      const k = randomBytes(32)
      const nonce = nonceOf(0)
      for (let size = 0; size < 16; size++) {
        assert.throws(() =>
          crypto.chaCha20Poly1305Decrypt(randomBytes(size), nonce, new Uint8Array(0), k),
        )
        const dst = new Uint8Array(0)
        assert.throws(() =>
          crypto.chaCha20Poly1305Decrypt(randomBytes(size), nonce, new Uint8Array(0), k, dst),
        )
      }
      const plain = randomBytes(100)
      const ad = randomBytes(32)
      assert.throws(() => crypto.chaCha20Poly1305Encrypt(plain, nonce, ad, randomBytes(16)))
      assert.throws(() => crypto.chaCha20Poly1305Encrypt(plain, nonceOf(0).subarray(4), ad, k))
      const sealed = bytes(crypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
      assert.throws(() => crypto.chaCha20Poly1305Decrypt(sealed, nonce, ad, k.subarray(1)))
    })
  }
})
