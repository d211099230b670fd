/**
 * hl-cli's bundle: `pnpm build` runs this (compiled, dist/scripts/bundle.js) after tsc,
 * turning dist/src/bin.js and everything it imports into dist/bundle/, which bin/hl-cli.js
 * runs. Why: a command that talks to the mesh loads ~640 modules (libp2p and its
 * dependencies); resolving and reading them one by one is most of a short command's time.
 * Code splitting keeps what `cli.ts` imports lazily (the mesh stack) in chunks of their
 * own, so `--help` and `--version` read only the entry chunk. Otherwise as the proxy's
 * bundle (packages/proxy/scripts/bundle.ts): whitespace minified, names kept,
 * sodium-native's addon shipped beside the chunks where p2pnode's loader looks first.
 */
import { rm } from 'node:fs/promises'
import { resolve } from 'node:path'
import { shipSodiumAddon } from '@mtc/p2pnode/xsalsa20'
import { build } from 'esbuild'

/** packages/hl-cli, seen from dist/scripts/. */
const PACKAGE_ROOT = resolve(import.meta.dirname, '../..')
const ENTRY = resolve(PACKAGE_ROOT, 'dist/src/bin.js')
/** bin/hl-cli.js imports OUT_DIR/hl-cli.mjs. */
export const OUT_DIR = resolve(PACKAGE_ROOT, 'dist/bundle')

/** CommonJS dependencies `require()` built-ins and use `__dirname`; an ESM chunk has neither. */
const CJS_SHIM = [
  "import { createRequire as __mtcCreateRequire } from 'node:module'",
  "import { dirname as __mtcDirname } from 'node:path'",
  "import { fileURLToPath as __mtcFileURLToPath } from 'node:url'",
  'const require = __mtcCreateRequire(import.meta.url)',
  'const __filename = __mtcFileURLToPath(import.meta.url)',
  'const __dirname = __mtcDirname(__filename)',
].join('\n')

await rm(OUT_DIR, { recursive: true, force: true })
await build({
  entryPoints: { 'hl-cli': ENTRY },
  outdir: OUT_DIR,
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunk-[hash]',
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node22',
  banner: { js: CJS_SHIM },
  legalComments: 'none',
  minifyWhitespace: true,
  logLevel: 'warning',
})
await shipSodiumAddon(OUT_DIR)
