/**
 * Noise's crypto with one `KeyObject` per session key. @chainsafe/libp2p-noise passes raw
 * key bytes to `createCipheriv` for every message, so Node imports the key each time
 * (measured: 17.8 µs per 1,200 B seal against 6.3 µs with a KeyObject made once). Noise
 * hands the same `k` array for every message of a CipherState, so a WeakMap on it finds
 * the KeyObject; its contents are compared too, so a reused or changed array never gets a
 * stale key. Everything else is noise's default crypto.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { Uint8ArrayList } from 'uint8arraylist'
import { NOISE_NODE_CRYPTO_MIN_BYTES } from './constants.ts'

const CHACHA_POLY1305 = 'chacha20-poly1305'
const TAG_BYTES = 16

interface CachedKey {
  bytes: Buffer
  key: KeyObject
}

const keys = new WeakMap<Uint8Array, CachedKey>()

/** The KeyObject of `k`, made once per key array (and again if its bytes changed). */
export function sessionKey(k: Uint8Array): KeyObject {
  const cached = keys.get(k)
  if (cached?.bytes.equals(k) === true) return cached.key
  const bytes = Buffer.from(k)
  const key = createSecretKey(bytes)
  keys.set(k, { bytes, key })
  return key
}

type Encrypt = ICryptoInterface['chaCha20Poly1305Encrypt']
type Decrypt = ICryptoInterface['chaCha20Poly1305Decrypt']
/** Noise's Uint8ArrayList (v2; ours is v3): the same class at run time (one Symbol.for tag). */
type NoiseList = Exclude<ReturnType<Encrypt>, Uint8Array>

const encrypt: Encrypt = (plaintext, nonce, ad, k) => {
  const cipher = createCipheriv(CHACHA_POLY1305, sessionKey(k), nonce, {
    authTagLength: TAG_BYTES,
  })
  cipher.setAAD(ad, { plaintextLength: plaintext.byteLength })
  if (plaintext instanceof Uint8Array) {
    const updated = cipher.update(plaintext)
    const final = cipher.final()
    const tag = cipher.getAuthTag()
    return Buffer.concat([updated, final, tag], updated.byteLength + final.byteLength + TAG_BYTES)
  }
  const output = new Uint8ArrayList()
  for (const buf of plaintext) output.append(cipher.update(buf))
  const final = cipher.final()
  if (final.byteLength > 0) output.append(final)
  output.append(cipher.getAuthTag())
  return output as unknown as NoiseList
}

const decrypt: Decrypt = (ciphertext, nonce, ad, k) => {
  const tagAt = ciphertext.byteLength - TAG_BYTES
  const decipher = createDecipheriv(CHACHA_POLY1305, sessionKey(k), nonce, {
    authTagLength: TAG_BYTES,
  })
  decipher.setAAD(ad, { plaintextLength: tagAt })
  decipher.setAuthTag(ciphertext.subarray(tagAt))
  if (ciphertext instanceof Uint8Array) {
    const output = decipher.update(ciphertext.subarray(0, tagAt))
    const final = decipher.final()
    return final.byteLength > 0 ? Buffer.concat([output, final]) : output
  }
  const output = new Uint8ArrayList()
  for (const buf of ciphertext.sublist(0, tagAt)) output.append(decipher.update(buf))
  const final = decipher.final()
  if (final.byteLength > 0) output.append(final)
  return output as unknown as NoiseList
}

/** Node's ChaCha20-Poly1305 with a cached KeyObject at every size (for measurements). */
export const keyObjectCrypto: ICryptoInterface = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt: encrypt,
  chaCha20Poly1305Decrypt: decrypt,
}

/**
 * `noise({ crypto: meshNoiseCrypto })`: Node's ChaCha20-Poly1305 with a cached KeyObject
 * from NOISE_NODE_CRYPTO_MIN_BYTES up, noise's default (WASM below 1,200 B) under it.
 */
export const meshNoiseCrypto: ICryptoInterface = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt(plaintext, nonce, ad, k) {
    if (plaintext.byteLength < NOISE_NODE_CRYPTO_MIN_BYTES) {
      return defaultCrypto.chaCha20Poly1305Encrypt(plaintext, nonce, ad, k)
    }
    return encrypt(plaintext, nonce, ad, k)
  },
  chaCha20Poly1305Decrypt(ciphertext, nonce, ad, k, dst) {
    if (ciphertext.byteLength < NOISE_NODE_CRYPTO_MIN_BYTES) {
      return defaultCrypto.chaCha20Poly1305Decrypt(ciphertext, nonce, ad, k, dst)
    }
    return decrypt(ciphertext, nonce, ad, k)
  },
}
