/**
 * The one way mtc bundles a Node program into a single self-contained ESM file, and the
 * proxy's bundle itself: `pnpm build` runs this (compiled, dist/scripts/bundle.js) after
 * tsc, turning dist/src/bin.js and everything it imports into dist/proxy.mjs, which both
 * `bin/proxy.js` and the mtc/base image run (packages/images bundles its other programs
 * with `bundle()` from `@mtc/proxy/bundle`).
 *
 * Why the proxy runs bundled: V8 keeps every module's source text for lazy compilation,
 * plus a record, namespace and bindings per module; ~680 ES modules from dist/ and
 * node_modules (comments and all) cost the proxy ~11 MB of RSS idle and under load
 * against one 1.6 MB bundle, at the same CPU per request (measured side by side; see the
 * proxy README's "Memory").
 */
import { dirname, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { shipSodiumAddon } from '@mtc/p2pnode/xsalsa20'
import { build } from 'esbuild'
import { shipKoffiAddon } from '../src/malloc-trim.ts'

/** packages/proxy, seen from dist/scripts/. */
const PACKAGE_ROOT = resolve(import.meta.dirname, '../..')

/** What `pnpm build` bundles, and where. */
export const PROXY_ENTRY = resolve(PACKAGE_ROOT, 'dist/src/bin.js')
export const PROXY_BUNDLE = resolve(PACKAGE_ROOT, 'dist/proxy.mjs')

/** The oldest Node the bundles must run on (ARCHITECTURE: Node >= 22). */
const TARGET = 'node22'

/**
 * Some dependencies are CommonJS: they `require()` Node built-ins (prom-client...) and use
 * `__dirname` (ssh2, under dockerode), which an ESM bundle does not have. Paths made from
 * it point next to the bundle.
 */
const CJS_SHIM = [
  "import { createRequire as __mtcCreateRequire } from 'node:module'",
  "import { dirname as __mtcDirname } from 'node:path'",
  "import { fileURLToPath as __mtcFileURLToPath } from 'node:url'",
  'const require = __mtcCreateRequire(import.meta.url)',
  'const __filename = __mtcFileURLToPath(import.meta.url)',
  'const __dirname = __mtcDirname(__filename)',
].join('\n')

/**
 * Bundles `entry` (a built .js file) and all it imports into `outfile`. Whitespace and
 * comments are minified, identifiers are not, so stack traces and `.name`s read as in the
 * source. Unminified, the proxy bundle is 2.7 MB and its comments hold a few non-Latin-1
 * characters (`⋅`, `—`), so V8 keeps the whole source as a two-byte string (5.4 MB of
 * heap); minified it is 1.6 MB of ASCII and the proxy's RSS ~3 MB lower. Renaming
 * identifiers as well (`minify`) saved nothing measurable. `external`: imports left to
 * run time, e.g. optional native addons a dependency `require()`s in a try (ssh2's).
 */
export async function bundle(
  entry: string,
  outfile: string,
  { external = [] }: { external?: string[] } = {},
): Promise<void> {
  const result = await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: TARGET,
    banner: { js: CJS_SHIM },
    legalComments: 'none',
    minifyWhitespace: true,
    logLevel: 'warning',
    metafile: true,
    external,
  })
  await shipNativeAddons(Object.keys(result.metafile.inputs), outfile)
}

/**
 * A bundle with the mesh node (its PSK layer's XSalsa20) gets sodium-native's prebuilt
 * addon for this platform beside it, where p2pnode's loader looks first: a bundle has no
 * node_modules. Without it the pure-JS fallback runs (slower, correct). Likewise a bundle
 * with the proxy's idle memory release gets koffi's addon, for `malloc_trim` (without
 * it the release is V8's GC alone).
 */
async function shipNativeAddons(inputs: string[], outfile: string): Promise<void> {
  const platform = `${process.platform}-${process.arch}`
  if (inputs.some((p) => /p2pnode\/dist\/src\/xsalsa20\.js$/.test(p))) {
    if ((await shipSodiumAddon(dirname(outfile))) == null) {
      process.stderr.write(`bundle: no sodium-native addon for ${platform}\n`)
    }
  }
  if (inputs.some((p) => /(^|\/)src\/malloc-trim\.[jt]s$/.test(p))) {
    if ((await shipKoffiAddon(dirname(outfile))) == null) {
      process.stderr.write(`bundle: no koffi addon (malloc_trim) for ${platform}\n`)
    }
  }
}

if (process.argv[1] != null && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await bundle(PROXY_ENTRY, PROXY_BUNDLE)
}
