/**
 * Bundles what goes into the images, each into one self-contained ESM file (no
 * node_modules in an image): the proxy, the entrypoint and the demo services.
 *
 *   node packages/images/src/bundle.ts OUT_DIR
 *
 * writes OUT_DIR/base/mtc/{proxy,entrypoint}.mjs, OUT_DIR/hello-world-server/app/
 * hello-world-server.mjs and OUT_DIR/hello-caller/app/hello-caller.mjs. The proxy and the
 * demos are bundled from their built output (dist/, made by `pnpm build`), so the images
 * carry exactly what the tests of those packages ran.
 */
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { build } from 'esbuild'

const REPO_ROOT = resolve(import.meta.dirname, '../../..')

/** The oldest Node the bundles must run on (ARCHITECTURE: Node >= 22). */
const TARGET = 'node22'

/**
 * Some dependencies are CommonJS: they `require()` Node built-ins (prom-client...) and use
 * `__dirname` (ssh2, under dockerode), which an ESM bundle does not have. Paths made from
 * it point next to the bundle; files expected there are not in the image (see STUBS).
 */
const CJS_SHIM = [
  "import { createRequire as __mtcCreateRequire } from 'node:module'",
  "import { dirname as __mtcDirname } from 'node:path'",
  "import { fileURLToPath as __mtcFileURLToPath } from 'node:url'",
  'const require = __mtcCreateRequire(import.meta.url)',
  'const __filename = __mtcFileURLToPath(import.meta.url)',
  'const __dirname = __mtcDirname(__filename)',
].join('\n')

const BUNDLES: { entry: string; out: string }[] = [
  { entry: 'packages/proxy/dist/src/bin.js', out: 'base/mtc/proxy.mjs' },
  { entry: 'packages/images/src/entrypoint.ts', out: 'base/mtc/entrypoint.mjs' },
  {
    entry: 'demos/helloworld/dist/src/hello-world-server.js',
    out: 'hello-world-server/app/hello-world-server.mjs',
  },
  { entry: 'demos/helloworld/dist/src/hello-caller.js', out: 'hello-caller/app/hello-caller.mjs' },
]

async function main(): Promise<number> {
  const outDir = process.argv[2]
  if (outDir == null) {
    process.stderr.write('usage: bundle.ts OUT_DIR\n')
    return 2
  }
  for (const { entry } of BUNDLES) {
    if (!existsSync(join(REPO_ROOT, entry))) {
      process.stderr.write(`bundle: ${entry} is missing; run \`pnpm build\` first\n`)
      return 1
    }
  }
  await Promise.all(
    BUNDLES.map(({ entry, out }) =>
      build({
        entryPoints: [join(REPO_ROOT, entry)],
        outfile: resolve(outDir, out),
        bundle: true,
        platform: 'node',
        format: 'esm',
        target: TARGET,
        banner: { js: CJS_SHIM },
        legalComments: 'none',
        logLevel: 'warning',
      }),
    ),
  )
  return 0
}

process.exitCode = await main()
