/**
 * Noise's ChaCha20-Poly1305, cheaper per message and wire-identical (RFC 8439: 12-byte
 * nonce, 16-byte tag after the ciphertext).
 *
 * - Under NOISE_NODE_CRYPTO_MIN_BYTES: libsodium through sodium-native's addon (the one
 *   the PSK layer loads, xsalsa20.ts), one call into C per message and no object, against
 *   a CipherBase and an EVP context per message for Node's cipher, or noise's WASM.
 * - From there up: Node's cipher (OpenSSL's AVX-512 ChaCha20 wins on large messages) with
 *   one `KeyObject` per session key. Noise passes raw key bytes to `createCipheriv` for
 *   every message, so Node would import the key each time (17.8 µs per 1,200 B seal
 *   against 6.3 µs with a KeyObject made once). Noise hands the same `k` array for every
 *   message of a CipherState, so a WeakMap on it finds the KeyObject; its contents are
 *   compared too, so a reused or changed array never gets a stale key.
 *
 * Everything else is noise's default crypto.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto'
import type { ICryptoInterface } from '@chainsafe/libp2p-noise'
import { defaultCrypto } from '@chainsafe/libp2p-noise/crypto'
import { Uint8ArrayList } from 'uint8arraylist'
import { NOISE_NODE_CRYPTO_MIN_BYTES } from './constants.ts'
import { loadSodiumAddon } from './xsalsa20.ts'

const CHACHA_POLY1305 = 'chacha20-poly1305'
const TAG_BYTES = 16
const NONCE_BYTES = 12
const KEY_BYTES = 32

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

/** The part of sodium-native's addon used here (its raw binding, no JS wrapper). */
interface SodiumAeadBinding {
  /** Seals `m` into `c` (`m.byteLength + 16` bytes; `m` may be `c`'s start): `c`'s length. */
  crypto_aead_chacha20poly1305_ietf_encrypt(
    c: Uint8Array,
    m: Uint8Array,
    ad: Uint8Array,
    npub: Uint8Array,
    k: Uint8Array,
  ): number
  /** Opens `c` into `m` (`c.byteLength - 16` bytes, may be `c`'s start): `m`'s length, or -1. */
  crypto_aead_chacha20poly1305_ietf_decrypt(
    m: Uint8Array,
    c: Uint8Array,
    ad: Uint8Array,
    npub: Uint8Array,
    k: Uint8Array,
  ): number
}

function loadAead(): SodiumAeadBinding | undefined {
  const loaded = loadSodiumAddon()
  if ('error' in loaded) return undefined
  const binding = loaded.addon as unknown as SodiumAeadBinding
  return typeof binding.crypto_aead_chacha20poly1305_ietf_encrypt === 'function' &&
    typeof binding.crypto_aead_chacha20poly1305_ietf_decrypt === 'function'
    ? binding
    : undefined
}

const aead = loadAead()

/**
 * The addon checks sizes with C asserts only (compiled out in its prebuilds): a wrong one
 * would read or write past a buffer, so they are checked here.
 */
function checkSizes(nonce: Uint8Array, k: Uint8Array): void {
  if (nonce.byteLength !== NONCE_BYTES || k.byteLength !== KEY_BYTES) {
    throw new RangeError(
      `ChaCha20-Poly1305 takes a ${NONCE_BYTES}-byte nonce, ${KEY_BYTES}-byte key`,
    )
  }
}

/** Same message as noise's WASM path, which noise turns into a connection error. */
const openFailed = (): Error => new Error('Invalid chacha20poly1305 decryption')

/**
 * A list's buffers, exactly its bytes (`bufs`: private in its types, public at run time;
 * noise's patch reads it too), without the generator its iterator makes.
 */
const bufsOf = (list: NoiseList): Uint8Array[] => (list as unknown as { bufs: Uint8Array[] }).bufs

/**
 * libsodium's IETF ChaCha20-Poly1305 (RFC 8439, what Noise uses: 12-byte nonce, 16-byte tag
 * after the ciphertext): one call into C, one output buffer. A list is copied into that
 * buffer and sealed in place (libsodium allows `m` at `c`'s start).
 */
function sodiumSeal(
  binding: SodiumAeadBinding,
  plaintext: Uint8Array | NoiseList,
  nonce: Uint8Array,
  ad: Uint8Array,
  k: Uint8Array,
): Uint8Array {
  checkSizes(nonce, k)
  const out = Buffer.allocUnsafe(plaintext.byteLength + TAG_BYTES)
  let m: Uint8Array
  if (plaintext instanceof Uint8Array) {
    m = plaintext
  } else {
    let at = 0
    for (const buf of bufsOf(plaintext)) {
      out.set(buf, at)
      at += buf.byteLength
    }
    m = out.subarray(0, at)
  }
  if (binding.crypto_aead_chacha20poly1305_ietf_encrypt(out, m, ad, nonce, k) !== out.byteLength) {
    throw new Error('ChaCha20-Poly1305 seal failed')
  }
  return out
}

/**
 * Opens into `dst` when noise offers one (a view of the ciphertext's own bytes: noise's
 * in-place decryption, as its WASM path does), else into one new buffer; a list spread
 * over several buffers is joined once and opened in place. A bad tag throws.
 */
function sodiumOpen(
  binding: SodiumAeadBinding,
  ciphertext: Uint8Array | NoiseList,
  nonce: Uint8Array,
  ad: Uint8Array,
  k: Uint8Array,
  dst?: Uint8Array,
): Uint8Array {
  checkSizes(nonce, k)
  const length = ciphertext.byteLength - TAG_BYTES
  if (length < 0) throw openFailed()
  let c: Uint8Array
  let m: Uint8Array
  const parts = ciphertext instanceof Uint8Array ? undefined : bufsOf(ciphertext)
  if (parts == null || parts.length === 1) {
    c = parts == null ? (ciphertext as Uint8Array) : parts[0]
    m = dst?.byteLength === length ? dst : Buffer.allocUnsafe(length)
  } else {
    // joined into a new buffer, which is ours to open in place
    c = ciphertext.subarray()
    m = c.subarray(0, length)
  }
  if (binding.crypto_aead_chacha20poly1305_ietf_decrypt(m, c, ad, nonce, k) !== length) {
    throw openFailed()
  }
  return m
}

/** Node's ChaCha20-Poly1305 with a cached KeyObject at every size (for tests, measurements). */
export const keyObjectCrypto: ICryptoInterface = {
  ...defaultCrypto,
  chaCha20Poly1305Encrypt: encrypt,
  chaCha20Poly1305Decrypt: decrypt,
}

/** libsodium's ChaCha20-Poly1305 at every size; undefined where the addon did not load. */
export const sodiumCrypto: ICryptoInterface | undefined =
  aead == null
    ? undefined
    : {
        ...defaultCrypto,
        chaCha20Poly1305Encrypt: (plaintext, nonce, ad, k) =>
          sodiumSeal(aead, plaintext, nonce, ad, k),
        chaCha20Poly1305Decrypt: (ciphertext, nonce, ad, k, dst) =>
          sodiumOpen(aead, ciphertext, nonce, ad, k, dst),
      }

/** Noise's own bound between its WASM and Node's cipher (used where the addon did not load). */
const NOISE_WASM_MAX_BYTES = 1_200

/**
 * Noise's crypto with Node's ChaCha20-Poly1305 and a cached KeyObject from
 * NOISE_NODE_CRYPTO_MIN_BYTES up and `small` under it; without `small` (no addon), noise's
 * default under 1,200 B (its WASM) and the KeyObject from there.
 */
export function meshCrypto(small: ICryptoInterface | undefined): ICryptoInterface {
  const nodeFrom = small != null ? NOISE_NODE_CRYPTO_MIN_BYTES : NOISE_WASM_MAX_BYTES
  const under = small ?? defaultCrypto
  return {
    ...defaultCrypto,
    chaCha20Poly1305Encrypt(plaintext, nonce, ad, k) {
      if (plaintext.byteLength < nodeFrom) {
        return under.chaCha20Poly1305Encrypt(plaintext, nonce, ad, k)
      }
      return encrypt(plaintext, nonce, ad, k)
    },
    chaCha20Poly1305Decrypt(ciphertext, nonce, ad, k, dst) {
      if (ciphertext.byteLength < nodeFrom) {
        return under.chaCha20Poly1305Decrypt(ciphertext, nonce, ad, k, dst)
      }
      return decrypt(ciphertext, nonce, ad, k)
    },
  }
}

/** `noise({ crypto: meshNoiseCrypto })`: libsodium for small messages, Node's for large. */
export const meshNoiseCrypto: ICryptoInterface = meshCrypto(sodiumCrypto)
