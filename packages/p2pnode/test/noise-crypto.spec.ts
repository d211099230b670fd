import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { describe, it } from 'node:test'
import { defaultCrypto, pureJsCrypto } from '@chainsafe/libp2p-noise/crypto'
import { Uint8ArrayList } from 'uint8arraylist'
import { NOISE_NODE_CRYPTO_MIN_BYTES } from '../src/constants.ts'
import { meshNoiseCrypto, sessionKey } from '../src/noise-crypto.ts'

/** Noise's input type (its Uint8ArrayList is v2; ours is v3, the same class at run time). */
type NoiseInput = Parameters<typeof meshNoiseCrypto.chaCha20Poly1305Encrypt>[0]

const bytes = (data: Uint8Array | { subarray(): Uint8Array }): Buffer =>
  Buffer.from(data instanceof Uint8Array ? data : data.subarray())

describe('Noise crypto with one KeyObject per session key', () => {
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

  it('seals and opens exactly as noise does, on both sides of the size threshold', () => {
    const k = randomBytes(32)
    const ad = randomBytes(32)
    const sizes = [
      0,
      1,
      100,
      NOISE_NODE_CRYPTO_MIN_BYTES - 1,
      NOISE_NODE_CRYPTO_MIN_BYTES,
      1199,
      1200,
      65_519,
    ]
    for (const [n, size] of sizes.entries()) {
      const nonce = Buffer.alloc(12)
      nonce.writeUInt32LE(n, 4)
      const plain = randomBytes(size)
      const ours = bytes(meshNoiseCrypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
      const reference = bytes(pureJsCrypto.chaCha20Poly1305Encrypt(plain, nonce, ad, k))
      assert.ok(ours.equals(reference), `seal of ${size} bytes`)
      // a list in (as noise passes a write buffer), and both ways across implementations
      const list = new Uint8ArrayList(plain.subarray(0, size >> 1), plain.subarray(size >> 1))
      assert.ok(
        bytes(
          meshNoiseCrypto.chaCha20Poly1305Encrypt(list as unknown as NoiseInput, nonce, ad, k),
        ).equals(reference),
      )
      const opened = meshNoiseCrypto.chaCha20Poly1305Decrypt(reference, nonce, ad, k)
      assert.ok(bytes(opened).equals(plain), `open of ${size} bytes`)
      const cut = new Uint8ArrayList(reference.subarray(0, 7), reference.subarray(7))
      assert.ok(
        bytes(
          meshNoiseCrypto.chaCha20Poly1305Decrypt(cut as unknown as NoiseInput, nonce, ad, k),
        ).equals(plain),
      )
      assert.ok(bytes(defaultCrypto.chaCha20Poly1305Decrypt(ours, nonce, ad, k)).equals(plain))
    }
  })

  it('refuses a message that was tampered with, whatever its size', () => {
    const k = randomBytes(32)
    const nonce = Buffer.alloc(12)
    for (const size of [10, 5_000]) {
      const sealed = bytes(
        meshNoiseCrypto.chaCha20Poly1305Encrypt(randomBytes(size), nonce, Buffer.alloc(0), k),
      )
      sealed[3] ^= 0x40
      assert.throws(() =>
        meshNoiseCrypto.chaCha20Poly1305Decrypt(sealed, nonce, Buffer.alloc(0), k),
      )
    }
  })
})
