/**
 * glibc's `malloc_trim(0)`, which Node has no API for, called through koffi's prebuilt
 * FFI addon (the proxy README's "Memory" says why this package and why the call).
 *
 * Why it is needed: every socket read in Node is a 64 KiB malloc, and a burst of traffic
 * leaves the C heap with tens of MB of free chunks between the live ones; glibc gives
 * back only the top of a heap on free (`M_TRIM_THRESHOLD`), so they stay resident until
 * `malloc_trim`, which also returns the free pages in the middle of every arena.
 *
 * A bundle has no node_modules: `bundle()` puts the addon beside it (as `koffi.node`),
 * where this module looks first, as p2pnode's xsalsa20.ts does for sodium-native's.
 * Without the addon, on a libc without `malloc_trim` (musl) or off Linux, loading says
 * why and the caller goes on without trimming.
 */
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { writeFileAtomic } from '@mtc/p2pnode/atomic-file'

/** The addon's file name beside a bundle. */
export const KOFFI_ADDON_FILE = 'koffi.node'

/** The part of koffi's native module used here. */
interface KoffiBinding {
  load(path: string | null): { func(definition: string): (...args: unknown[]) => unknown }
}

const require = createRequire(import.meta.url)

/**
 * The installed koffi's prebuilt addon for this platform and glibc, if there is one: koffi
 * keeps its binaries in one optional package per platform (`@koromix/koffi-linux-x64`:
 * `linux_x64/` for glibc, `musl_x64/` for musl); only glibc has `malloc_trim`.
 */
export function installedKoffiAddon(): string | undefined {
  if (process.platform !== 'linux') return undefined
  try {
    const fromKoffi = createRequire(require.resolve('koffi'))
    const pkg = dirname(fromKoffi.resolve(`@koromix/koffi-linux-${process.arch}/package.json`))
    const path = join(pkg, `linux_${process.arch}`, KOFFI_ADDON_FILE)
    return existsSync(path) ? path : undefined
  } catch {
    return undefined // not installed (a bundle), or no package for this platform
  }
}

/**
 * Puts the installed addon in `dir` (beside a bundle) and returns its path, or undefined
 * when there is none for this platform. Written atomically (a new file renamed over the
 * old): a proxy running from that bundle keeps its mapping, as with p2pnode's
 * shipSodiumAddon.
 */
export async function shipKoffiAddon(dir: string): Promise<string | undefined> {
  const addon = installedKoffiAddon()
  if (addon == null) return undefined
  const dest = join(dir, KOFFI_ADDON_FILE)
  await writeFileAtomic(dest, await readFile(addon), 0o755)
  return dest
}

/** Where the addon may be, first found wins: beside this module (a bundle), the package. */
export function koffiAddonCandidates(): string[] {
  const beside = join(dirname(fileURLToPath(import.meta.url)), KOFFI_ADDON_FILE)
  const installed = installedKoffiAddon()
  return installed != null ? [beside, installed] : [beside]
}

/** `malloc_trim(0)`: returns whether glibc gave memory back. */
export type MallocTrim = () => boolean

/** Loads `malloc_trim` through the first addon that works, or says why none did. */
export function loadMallocTrim(
  candidates: string[] = koffiAddonCandidates(),
): { trim: MallocTrim; path: string } | { error: string } {
  if (process.platform !== 'linux') return { error: `no malloc_trim on ${process.platform}` }
  const errors: string[] = []
  for (const path of candidates) {
    if (!existsSync(path)) continue
    try {
      const koffi = require(path) as KoffiBinding
      // The process's own symbols (dlopen(NULL)): glibc's, whatever its file is called.
      const mallocTrim = koffi.load(null).func('int malloc_trim(size_t pad)')
      return { trim: () => mallocTrim(0) === 1, path }
    } catch (err) {
      errors.push(`${path}: ${(err as Error).message}`)
    }
  }
  return { error: errors.length > 0 ? errors.join('; ') : 'koffi addon not found' }
}
