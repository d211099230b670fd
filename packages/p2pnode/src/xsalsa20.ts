/**
 * XSalsa20 keystreams for the PSK layer (pnet), one per connection and direction, each a
 * continuous stream across calls: the bytes of `update(a)` then `update(b)` are those of
 * `update(a ‖ b)`, whatever the chunk sizes, as `xsalsa20@1.2.0` (what @libp2p/pnet uses)
 * produces them, so the wire format is unchanged.
 *
 * Why not `xsalsa20@1.2.0`: all its instances share one WebAssembly memory; when one call
 * grows it, every other instance's cached view goes stale and grows it again on its next
 * call until `WebAssembly.Memory.grow()` throws (a 1 MiB call then ~1,000 small calls on
 * two instances), which took daemons down under slow readers.
 *
 * Backends: libsodium through `sodium-native`'s prebuilt addon (its `crypto_stream_xor_*`
 * state keeps the block counter and the unused end of a partial block per stream: no
 * shared memory, ~6× faster than the WASM), else `@noble/ciphers` in pure JS.
 */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { xsalsa20 as nobleXsalsa20 } from '@noble/ciphers/salsa.js'
import { writeFileAtomic } from './atomic-file.ts'

export const XSALSA20_NONCE_BYTES = 24
export const XSALSA20_KEY_BYTES = 32
const BLOCK = 64

/** One direction of a connection: XORs each chunk with the next bytes of the keystream. */
export interface XorStream {
  /**
   * `data` XOR the next `data.byteLength` keystream bytes, written to `out` (a new array
   * when not given; `data` itself to XOR in place, or a view of a larger buffer, at least
   * `data.byteLength` long), which is returned.
   */
  update(data: Uint8Array, out?: Uint8Array): Uint8Array
}

export type XorBackendName = 'sodium-native' | 'js'

/** The part of sodium-native's addon used here (its raw binding, no JS wrapper). */
interface SodiumStreamBinding {
  crypto_stream_xor_STATEBYTES: number
  crypto_stream_xor_init(state: Uint8Array, nonce: Uint8Array, key: Uint8Array): void
  crypto_stream_xor_update(state: Uint8Array, out: Uint8Array, data: Uint8Array): void
}

/**
 * The addon's file name. A bundle carries its own copy next to itself (packages/proxy's
 * `bundle()` puts it there), since a bundle has no node_modules to resolve from.
 */
export const SODIUM_ADDON_FILE = 'sodium-native.node'

const require = createRequire(import.meta.url)

/** The installed sodium-native's prebuilt addon for this platform, if there is one. */
export function installedSodiumAddon(): string | undefined {
  try {
    const pkg = dirname(require.resolve('sodium-native/package.json'))
    const path = join(pkg, 'prebuilds', `${process.platform}-${process.arch}`, SODIUM_ADDON_FILE)
    return existsSync(path) ? path : undefined
  } catch {
    return undefined // not installed (a bundle): only a copy beside it counts
  }
}

/**
 * Puts the installed addon in `dir` (beside a bundle) and returns its path, or undefined
 * when there is none for this platform. Replaced by rename, never rewritten in place: a
 * process that has the old file loaded (a proxy running from that bundle while it is
 * rebuilt) keeps its mapping; copying over it killed every such process with SIGBUS.
 */
export async function shipSodiumAddon(dir: string): Promise<string | undefined> {
  const addon = installedSodiumAddon()
  if (addon == null) return undefined
  const dest = join(dir, SODIUM_ADDON_FILE)
  await writeFileAtomic(dest, await readFile(addon), 0o755)
  return dest
}

/** Where the addon may be, first found wins: beside this module (a bundle), the package. */
function sodiumAddonCandidates(): string[] {
  const beside = join(dirname(fileURLToPath(import.meta.url)), SODIUM_ADDON_FILE)
  const installed = installedSodiumAddon()
  return installed != null ? [beside, installed] : [beside]
}

type LoadedAddon = { addon: Record<string, unknown>; path: string } | { error: string }
let loadedAddon: LoadedAddon | undefined

/**
 * sodium-native's addon, the first candidate that loads, once per process (noise-crypto.ts
 * uses its ChaCha20-Poly1305 too), or why none did.
 */
export function loadSodiumAddon(): LoadedAddon {
  if (loadedAddon != null) return loadedAddon
  const errors: string[] = []
  for (const path of sodiumAddonCandidates()) {
    if (!existsSync(path)) continue
    try {
      loadedAddon = { addon: require(path) as Record<string, unknown>, path }
      return loadedAddon
    } catch (err) {
      errors.push(`${path}: ${(err as Error).message}`)
    }
  }
  loadedAddon = { error: errors.length > 0 ? errors.join('; ') : 'addon not found' }
  return loadedAddon
}

function loadSodium(): { binding: SodiumStreamBinding; path: string } | { error: string } {
  if (process.env.MTC_XSALSA20_BACKEND === 'js') return { error: 'MTC_XSALSA20_BACKEND=js' }
  const loaded = loadSodiumAddon()
  if ('error' in loaded) return loaded
  const binding = loaded.addon as unknown as SodiumStreamBinding
  if (
    typeof binding.crypto_stream_xor_init !== 'function' ||
    typeof binding.crypto_stream_xor_update !== 'function'
  ) {
    return { error: `${loaded.path}: no crypto_stream_xor_init/update` }
  }
  return { binding, path: loaded.path }
}

const sodium = loadSodium()

/** Which backend the PSK layer uses in this process, and why not the native one. */
export function xorBackend(): { name: XorBackendName; detail: string } {
  return 'binding' in sodium
    ? { name: 'sodium-native', detail: sodium.path }
    : { name: 'js', detail: sodium.error }
}

function checkInit(nonce: Uint8Array, key: Uint8Array): void {
  if (nonce.byteLength !== XSALSA20_NONCE_BYTES) {
    throw new RangeError(`an XSalsa20 nonce is ${XSALSA20_NONCE_BYTES} bytes`)
  }
  if (key.byteLength !== XSALSA20_KEY_BYTES) {
    throw new RangeError(`an XSalsa20 key is ${XSALSA20_KEY_BYTES} bytes`)
  }
}

/** libsodium: the state (nonce, key, counter, partial block) lives in a per-stream buffer. */
export class SodiumXorStream implements XorStream {
  private readonly state: Uint8Array
  private readonly binding: SodiumStreamBinding

  constructor(nonce: Uint8Array, key: Uint8Array, binding: SodiumStreamBinding) {
    checkInit(nonce, key)
    this.binding = binding
    this.state = new Uint8Array(binding.crypto_stream_xor_STATEBYTES)
    binding.crypto_stream_xor_init(this.state, nonce, key)
  }

  update(data: Uint8Array, out: Uint8Array = Buffer.allocUnsafe(data.byteLength)): Uint8Array {
    if (data.byteLength > 0) this.binding.crypto_stream_xor_update(this.state, out, data)
    return out
  }
}

const ZERO_BLOCK = new Uint8Array(BLOCK)

/**
 * Pure JS: whole blocks straight from noble at the stream's block counter; the keystream
 * of a block cut by a chunk boundary is kept and its unused end serves the next chunk.
 * Noble's counter is 32-bit: 256 GiB per direction, after which `update` throws (and
 * the connection is aborted); the native backend has a 64-bit counter.
 */
export class JsXorStream implements XorStream {
  private readonly nonce: Uint8Array
  private readonly key: Uint8Array
  /** Index of the next block to generate. */
  private counter = 0
  /** Keystream of the last, partly used block and how much of it is used (64: none left). */
  private readonly block = new Uint8Array(BLOCK)
  private used = BLOCK

  constructor(nonce: Uint8Array, key: Uint8Array) {
    checkInit(nonce, key)
    this.nonce = Uint8Array.from(nonce)
    this.key = Uint8Array.from(key)
  }

  update(data: Uint8Array, out: Uint8Array = new Uint8Array(data.byteLength)): Uint8Array {
    const len = data.byteLength
    let i = 0
    for (; this.used < BLOCK && i < len; i++) out[i] = data[i] ^ this.block[this.used++]
    const whole = (len - i) & ~(BLOCK - 1)
    if (whole > 0) {
      const end = i + whole
      nobleXsalsa20(this.key, this.nonce, data.subarray(i, end), out.subarray(i, end), this.counter)
      this.counter += whole / BLOCK
      i = end
    }
    if (i < len) {
      nobleXsalsa20(this.key, this.nonce, ZERO_BLOCK, this.block, this.counter++)
      this.used = 0
      for (; i < len; i++) out[i] = data[i] ^ this.block[this.used++]
    }
    return out
  }
}

/** A keystream with the process's backend (native when its addon loads). */
export function xsalsa20Stream(nonce: Uint8Array, key: Uint8Array): XorStream {
  return 'binding' in sodium
    ? new SodiumXorStream(nonce, key, sodium.binding)
    : new JsXorStream(nonce, key)
}

/** The native backend's binding, for tests and benchmarks (undefined where it did not load). */
export function sodiumBinding(): SodiumStreamBinding | undefined {
  return 'binding' in sodium ? sodium.binding : undefined
}
